"""Layered images on the real engine and registry: busybox OS -> host-jre middleware -> app."""

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import pytest

from shipline.build import app_image
from shipline.build.base_layers import EtcdBaseLayerRecords
from shipline.build.images import ensure_middleware_image, ensure_os_image
from shipline.build.registry import PushedImage, Registry, push_image
from shipline.build.rootfs import DebianArchive
from shipline.config import Settings
from shipline.docker import docker_client
from shipline.errors import PushError
from shipline.spec import LayerRef
from tests.images import layer_digests

COMMITTED = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


def log(line: str) -> None:
    """Build output is not what these tests look at."""


def build_and_push(
    registry: Registry,
    *,
    app: str,
    sha: str,
    artifact: Path,
    middleware: PushedImage,
    scratch: Path,
    command: list[str],
    copy_to: str = "/app",
) -> PushedImage:
    """Assemble the app image of ``artifact`` (its workspace: the artifact's parent) and push it."""
    built = app_image.build(
        registry,
        repository=registry.app_repository(app),
        tag=sha,
        artifact=artifact,
        workspace=artifact.parent,
        copy_to=copy_to,
        workdir=copy_to,
        command=command,
        labels=app_image.app_labels(
            app=app, sha=sha, source="file:///x", committed=COMMITTED, middleware=middleware, copy_to=copy_to
        ),
        created=COMMITTED,
        middleware=middleware,
        directory=scratch,
        log=log,
    )
    return app_image.push(registry, built, log)


@pytest.fixture(scope="module")
def client(settings: Settings) -> docker.DockerClient:
    """The engine with the registry's login, as the build tasks get it (the registry block's client)."""
    client = docker_client(settings.docker_url)
    Registry.of_stack(settings).log_in(client)
    return client


def test_layers_stack_and_are_reused(settings: Settings, client: docker.DockerClient, tmp_path: Path) -> None:
    version = f"t{uuid.uuid4().hex[:8]}"
    os_layer, middleware_layer = (
        LayerRef(name="busybox", version=version),
        LayerRef(name="host-jre", version=version),
    )
    os_image = ensure_os_image(
        client,
        registry=Registry.of_stack(settings),
        records=EtcdBaseLayerRecords(settings.etcd_url),
        layer=os_layer,
        cache_dir=tmp_path / "rootfs",
        debian=DebianArchive.from_settings(settings),
        log=log,
    )
    middleware = ensure_middleware_image(
        client,
        registry=Registry.of_stack(settings),
        records=EtcdBaseLayerRecords(settings.etcd_url),
        layer=middleware_layer,
        os_image=os_image,
        log=log,
    )
    assert layer_digests(client, middleware.by_digest)[
        : len(layer_digests(client, os_image.by_digest))
    ] == layer_digests(client, os_image.by_digest)

    # A second call finds both in the registry and builds nothing.
    lines: list[str] = []
    again = ensure_os_image(
        client,
        registry=Registry.of_stack(settings),
        records=EtcdBaseLayerRecords(settings.etcd_url),
        layer=os_layer,
        cache_dir=tmp_path / "x",
        debian=DebianArchive.from_settings(settings),
        log=lines.append,
    )
    assert again.digest == os_image.digest and not (tmp_path / "x").exists()
    assert (
        ensure_middleware_image(
            client,
            registry=Registry.of_stack(settings),
            records=EtcdBaseLayerRecords(settings.etcd_url),
            layer=middleware_layer,
            os_image=os_image,
            log=lines.append,
        ).digest
        == middleware.digest
    )
    assert all(line.startswith("reusing") for line in lines)

    artifact = tmp_path / "build" / "hello.txt"
    artifact.parent.mkdir()
    artifact.write_text("hello\n")
    app = f"imgtest-{version}"
    registry = Registry.of_stack(settings)
    pushed = build_and_push(
        registry,
        app=app,
        sha="f" * 40,
        artifact=artifact,
        middleware=middleware,
        scratch=tmp_path / "image",
        command=["cat", "/app/hello.txt"],
    )
    assert registry.manifest_digest(pushed.repository, "f" * 40) == pushed.digest
    client.images.pull(pushed.by_digest)  # the engine reads what was pushed: it was never built there
    app_layers = layer_digests(client, pushed.by_digest)
    assert app_layers[:-1] == layer_digests(client, middleware.by_digest)  # exactly one layer on top
    image = client.images.get(pushed.by_digest)
    assert image.labels["org.opencontainers.image.revision"] == "f" * 40
    assert image.labels["shipline.app"] == app
    assert image.labels["org.opencontainers.image.created"] == "2026-11-02T09:30:00Z"
    assert image.attrs["Created"].startswith("2026-11-02T09:30:00")
    output = client.containers.run(pushed.by_digest, remove=True, network_mode="host")
    assert output == b"hello\n"


def test_one_commit_built_twice_has_one_digest(
    settings: Settings, client: docker.DockerClient, tmp_path: Path
) -> None:
    """Another run, another checkout (new file times), the same commit: the same digest, nothing re-sent."""
    middleware = _small_middleware(settings, client, tmp_path)
    registry = Registry.of_stack(settings)
    app = f"repro-{uuid.uuid4().hex[:8]}"
    digests = []
    for run in ("first", "second"):
        dist = tmp_path / run / "dist"
        (dist / "bin").mkdir(parents=True)
        (dist / "bin" / "start").write_text("#!/bin/sh\necho started\n")
        (dist / "bin" / "start").chmod(0o700 if run == "first" else 0o750)  # normalised to 0755
        (dist / "static").mkdir()
        (dist / "static" / "index.html").write_text("<h1>hello</h1>\n")
        (dist / "current").symlink_to("bin/start")
        stamp = 1_700_000_000 if run == "first" else 1_800_000_000
        for path in dist.rglob("*"):
            os.utime(path, (stamp, stamp), follow_symlinks=False)
        pushed = build_and_push(
            registry,
            app=app,
            sha="a" * 40,
            artifact=dist,
            middleware=middleware,
            scratch=tmp_path / run / "image",
            command=["/app/current"],
        )
        digests.append(pushed.digest)
    assert digests[0] == digests[1]
    image = f"{registry.app_repository(app)}@{digests[0]}"
    assert client.containers.run(image, remove=True, network_mode="host") == b"started\n"

    # A changed file is another image.
    (tmp_path / "second" / "dist" / "static" / "index.html").write_text("<h1>changed</h1>\n")
    changed = build_and_push(
        registry,
        app=app,
        sha="a" * 40,
        artifact=tmp_path / "second" / "dist",
        middleware=middleware,
        scratch=tmp_path / "third",
        command=["/app/current"],
    )
    assert changed.digest != digests[0]


def _small_middleware(settings: Settings, client: docker.DockerClient, tmp_path: Path) -> PushedImage:
    version = f"p{uuid.uuid4().hex[:8]}"
    registry = Registry.of_stack(settings)
    os_image = ensure_os_image(
        client,
        registry=registry,
        records=EtcdBaseLayerRecords(settings.etcd_url),
        layer=LayerRef(name="busybox", version=version),
        cache_dir=tmp_path / "rootfs",
        debian=DebianArchive.from_settings(settings),
        log=log,
    )
    return ensure_middleware_image(
        client,
        registry=registry,
        records=EtcdBaseLayerRecords(settings.etcd_url),
        layer=LayerRef(name="host-jre", version=version),
        os_image=os_image,
        log=log,
    )


def test_missing_tag_has_no_digest(settings: Settings) -> None:
    assert (
        Registry.of_stack(settings).manifest_digest(f"{settings.registry_address}/apps/none", "nope") is None
    )


def test_push_to_a_dead_registry_fails_clearly(client: docker.DockerClient) -> None:
    client.api.tag(client.images.list()[0].id, "127.0.0.1:1/apps/dead", "v1")
    with pytest.raises(PushError, match=r"push of 127\.0\.0\.1:1/apps/dead:v1 failed") as caught:
        push_image(client, "127.0.0.1:1/apps/dead", "v1", log)
    assert caught.value.transient
    client.images.remove("127.0.0.1:1/apps/dead:v1")


def test_app_moves_onto_new_layers_without_recompiling(
    settings: Settings, client: docker.DockerClient, tmp_path: Path
) -> None:
    version = f"r{uuid.uuid4().hex[:8]}"
    os_layer, middleware_layer = (
        LayerRef(name="busybox", version=version),
        LayerRef(name="host-jre", version=version),
    )
    layers: dict[str, Any] = {
        "registry": Registry.of_stack(settings),
        "records": EtcdBaseLayerRecords(settings.etcd_url),
        "debian": DebianArchive.from_settings(settings),
    }
    old_os = ensure_os_image(client, **layers, layer=os_layer, cache_dir=tmp_path / "a", log=log)
    old_mw = ensure_middleware_image(
        client,
        registry=layers["registry"],
        records=layers["records"],
        layer=middleware_layer,
        os_image=old_os,
        log=log,
    )
    artifact = tmp_path / "dist"
    artifact.mkdir()
    (artifact / "hello.txt").write_text("built once\n")
    app = f"rebase-{version}"
    registry = layers["registry"]
    old_app = build_and_push(
        registry,
        app=app,
        sha="e" * 40,
        artifact=artifact,
        middleware=old_mw,
        scratch=tmp_path / "image",
        command=["cat", "/opt/app/hello.txt"],
        copy_to="/opt/app",
    )

    # An OS update: the layers are rebuilt (a new root filesystem), the app is moved onto them.
    new_os = ensure_os_image(
        client, **layers, layer=os_layer, cache_dir=tmp_path / "b", log=log, rebuild=True
    )
    new_mw = ensure_middleware_image(
        client,
        registry=layers["registry"],
        records=layers["records"],
        layer=middleware_layer,
        os_image=new_os,
        log=log,
        rebuild=True,
    )
    assert new_mw.digest != old_mw.digest
    rebased = app_image.rebase(
        registry, app_image=old_app.by_digest, middleware=new_mw, directory=tmp_path / "rebased", log=log
    )
    assert rebased.tag == f"{'e' * 40}-{middleware_layer.version}"
    client.images.pull(rebased.by_digest)
    assert layer_digests(client, rebased.by_digest)[:-1] == layer_digests(client, new_mw.by_digest)
    assert client.containers.run(rebased.by_digest, remove=True, network_mode="host") == b"built once\n"
    assert client.images.get(rebased.by_digest).labels["org.opencontainers.image.revision"] == "e" * 40
    assert client.images.get(rebased.by_digest).labels["shipline.middleware"] == new_mw.by_digest
    # Moving the same image onto the same middleware again gives the same digest.
    again = app_image.rebase(
        registry, app_image=old_app.by_digest, middleware=new_mw, directory=tmp_path / "again", log=log
    )
    assert again.digest == rebased.digest
