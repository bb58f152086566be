"""Layered images on the real engine and registry: busybox OS -> host-jre middleware -> app."""

import uuid
from pathlib import Path
from typing import Any

import docker
import pytest

from shipline.build.images import build_app_image, ensure_middleware_image, ensure_os_image, rebase_app_image
from shipline.build.registry import Registry, push_image
from shipline.config import Settings
from shipline.docker import docker_client
from shipline.errors import PushError
from shipline.spec import ImageSpec, LayerRef
from tests.images import layer_digests


def log(line: str) -> None:
    """Build output is not what these tests look at."""


@pytest.fixture(scope="module")
def client(settings: Settings) -> docker.DockerClient:
    return docker_client(settings.docker_url)


def test_layers_stack_and_are_reused(settings: Settings, client: docker.DockerClient, tmp_path: Path) -> None:
    version = f"t{uuid.uuid4().hex[:8]}"
    os_layer, middleware_layer = (
        LayerRef(name="busybox", version=version),
        LayerRef(name="host-jre", version=version),
    )
    os_image = ensure_os_image(
        client,
        registry=Registry(address=settings.registry_address),
        layer=os_layer,
        cache_dir=tmp_path / "rootfs",
        mirror=settings.debian_mirror,
        log=log,
    )
    middleware = ensure_middleware_image(
        client,
        registry=Registry(address=settings.registry_address),
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
        registry=Registry(address=settings.registry_address),
        layer=os_layer,
        cache_dir=tmp_path / "x",
        mirror=settings.debian_mirror,
        log=lines.append,
    )
    assert again.digest == os_image.digest and not (tmp_path / "x").exists()
    assert (
        ensure_middleware_image(
            client,
            registry=Registry(address=settings.registry_address),
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
    spec = ImageSpec(os=os_layer, middleware=middleware_layer, command=["cat", "/app/hello.txt"])
    app = f"imgtest-{version}"
    image_id = build_app_image(
        client,
        registry=Registry(address=settings.registry_address),
        app=app,
        sha="f" * 40,
        source="file:///x",
        artifact=artifact,
        image=spec,
        middleware=middleware,
        log=log,
    )
    app_layers = layer_digests(client, image_id)
    assert app_layers[:-1] == layer_digests(client, middleware.by_digest)  # exactly one layer on top
    labels = client.images.get(image_id).labels
    assert labels["org.opencontainers.image.revision"] == "f" * 40
    assert labels["shipline.app"] == app and "org.opencontainers.image.created" in labels
    pushed = push_image(client, f"{settings.registry_address}/apps/{app}", "f" * 40, log)
    assert (
        Registry(address=settings.registry_address).manifest_digest(pushed.repository, "f" * 40)
        == pushed.digest
    )
    output = client.containers.run(pushed.by_digest, remove=True, network_mode="host")
    assert output == b"hello\n"


def test_missing_tag_has_no_digest(settings: Settings) -> None:
    assert (
        Registry(address=settings.registry_address).manifest_digest(
            f"{settings.registry_address}/apps/none", "nope"
        )
        is None
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
    layers: dict[str, Any] = {"registry": Registry(address=settings.registry_address)}
    old_os = ensure_os_image(client, **layers, layer=os_layer, cache_dir=tmp_path / "a", mirror="", log=log)
    old_mw = ensure_middleware_image(client, **layers, layer=middleware_layer, os_image=old_os, log=log)
    artifact = tmp_path / "dist"
    artifact.mkdir()
    (artifact / "hello.txt").write_text("built once\n")
    spec = ImageSpec(
        os=os_layer,
        middleware=middleware_layer,
        command=["cat", "/opt/app/hello.txt"],
        copy_artifact_to="/opt/app",
    )
    app = f"rebase-{version}"
    build_app_image(
        client,
        **layers,
        app=app,
        sha="e" * 40,
        source="file:///x",
        artifact=artifact,
        image=spec,
        middleware=old_mw,
        log=log,
    )
    old_app = push_image(client, f"{settings.registry_address}/apps/{app}", "e" * 40, log)

    # An OS update: the layers are rebuilt (a new root filesystem), the app is moved onto them.
    new_os = ensure_os_image(
        client, **layers, layer=os_layer, cache_dir=tmp_path / "b", mirror="", log=log, rebuild=True
    )
    new_mw = ensure_middleware_image(
        client, **layers, layer=middleware_layer, os_image=new_os, log=log, rebuild=True
    )
    assert new_mw.digest != old_mw.digest
    rebased = rebase_app_image(
        client, **layers, app_image=old_app.by_digest, middleware=new_mw, tag="e" * 40 + "-2", log=log
    )
    assert layer_digests(client, rebased.by_digest)[:-1] == layer_digests(client, new_mw.by_digest)
    assert client.containers.run(rebased.by_digest, remove=True, network_mode="host") == b"built once\n"
    assert client.images.get(rebased.by_digest).labels["org.opencontainers.image.revision"] == "e" * 40
