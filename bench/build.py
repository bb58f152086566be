"""Layered build: cold (OS + middleware + app) against warm (one-line change: app layer only), and the
same commit built twice from two checkouts (new file times): both digests are printed."""

from __future__ import annotations

import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from shipline.build import app_image
from shipline.build.base_layers import EtcdBaseLayerRecords
from shipline.build.images import ensure_middleware_image, ensure_os_image
from shipline.build.registry import PushedImage, Registry
from shipline.build.rootfs import DebianArchive
from shipline.config import PROJECT_ROOT, Settings
from shipline.docker import docker_client, run_in_image
from shipline.spec import LayerRef, load_spec

SAMPLE = PROJECT_ROOT / "examples" / "hello-python"
COMMITTED = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


def _blob_bytes(settings: Settings) -> dict[str, int]:
    root = settings.home / "registry" / "data" / "docker" / "registry" / "v2" / "blobs"
    return {str(p): p.stat().st_size for p in root.rglob("data")}


def _uploaded(before: dict[str, int], settings: Settings) -> int:
    return sum(size for path, size in _blob_bytes(settings).items() if path not in before)


def _manifest(settings: Settings, repository: str, tag: str) -> dict[str, Any]:
    name = repository.removeprefix(f"{settings.registry_address}/")
    response = httpx.get(
        f"http://{settings.registry_address}/v2/{name}/manifests/{tag}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        auth=Registry.of_stack(settings).basic_auth(),
    )
    return dict(response.json())


def _new_layer_bytes(before: dict[str, int], settings: Settings, manifest: dict[str, Any]) -> int:
    """Bytes of the manifest's layers that were not in the registry before (config and manifest excluded)."""
    new = {Path(path).parent.name for path in _blob_bytes(settings) if path not in before}
    return sum(int(layer["size"]) for layer in manifest["layers"] if layer["digest"].split(":")[1] in new)


def run(settings: Settings) -> dict[str, float | str]:
    """Build the sample cold, then warm after a one-line change; return the figures."""
    client = docker_client(settings.docker_url)
    spec = load_spec(SAMPLE)
    tag = f"bench{int(time.time())}"
    os_layer = LayerRef(name=spec.image.os.name, version=f"{spec.image.os.version}-{tag}")
    middleware_layer = LayerRef(
        name=spec.image.middleware.name, version=f"{spec.image.middleware.version}-{tag}"
    )
    registry = Registry.of_stack(settings)
    records = EtcdBaseLayerRecords(settings.etcd_url)
    registry.log_in(client)
    repository = registry.app_repository(f"bench-{tag}")
    quiet = lambda line: None  # noqa: E731

    with tempfile.TemporaryDirectory() as scratch:
        workspace = Path(scratch) / "app"
        shutil.copytree(SAMPLE, workspace, ignore=shutil.ignore_patterns("__pycache__", "reports"))

        def compile_and_build(sha: str, middleware_image: PushedImage, tree: Path = workspace) -> PushedImage:
            done = run_in_image(
                client,
                image=middleware_image.by_digest,
                command=spec.build.command,
                workspace=tree,
                mounts=[],
                log=quiet,
            )
            assert done.code == 0, done.tail_text()
            built = app_image.build(
                registry,
                repository=repository,
                tag=sha,
                artifact=tree / spec.build.artifact,
                workspace=tree,
                copy_to=spec.image.copy_artifact_to,
                workdir=spec.image.workdir,
                command=spec.image.command,
                labels=app_image.app_labels(
                    app=f"bench-{tag}",
                    sha=sha,
                    source="bench",
                    committed=COMMITTED,
                    middleware=middleware_image,
                    copy_to=spec.image.copy_artifact_to,
                ),
                created=COMMITTED,
                middleware=middleware_image,
                directory=Path(scratch) / "image" / sha,
                log=quiet,
            )
            return app_image.push(registry, built, quiet)

        before = _blob_bytes(settings)
        started = time.monotonic()
        os_image = ensure_os_image(
            client,
            registry=registry,
            records=records,
            layer=os_layer,
            cache_dir=Path(scratch) / "rootfs",
            debian=DebianArchive.from_settings(settings),
            log=quiet,
        )
        middleware = ensure_middleware_image(
            client, registry=registry, records=records, layer=middleware_layer, os_image=os_image, log=quiet
        )
        compile_and_build("1" * 40, middleware)
        cold_seconds = time.monotonic() - started
        cold_bytes = _uploaded(before, settings)

        service = workspace / "app" / "service.py"
        service.write_text(service.read_text().replace('"ok\\n"', '"ok, still\\n"'))
        before = _blob_bytes(settings)
        started = time.monotonic()
        middleware = ensure_middleware_image(
            client, registry=registry, records=records, layer=middleware_layer, os_image=os_image, log=quiet
        )
        first = compile_and_build("2" * 40, middleware)
        warm_seconds = time.monotonic() - started
        warm_bytes = _uploaded(before, settings)
        manifest = _manifest(settings, repository, "2" * 40)
        warm_layer_bytes = _new_layer_bytes(before, settings, manifest)
        app_layer = int(manifest["layers"][-1]["size"])

        # The same commit again, from another checkout: a copy made later has other file times.
        time.sleep(1.1)
        second_tree = Path(scratch) / "second-checkout"
        shutil.copytree(workspace, second_tree, copy_function=shutil.copy)
        second = compile_and_build("2" * 40, middleware, second_tree)
    return {
        "cold_build_push_seconds": cold_seconds,
        "cold_uploaded_bytes": cold_bytes,
        "warm_build_push_seconds": warm_seconds,
        "warm_uploaded_bytes": warm_bytes,
        "warm_uploaded_layer_bytes": warm_layer_bytes,
        "app_layer_bytes": app_layer,
        "layer_bytes_over_app_layer": warm_layer_bytes / app_layer,
        "all_bytes_over_app_layer": warm_bytes / app_layer,
        "warm_over_cold_time": warm_seconds / cold_seconds,
        "same_commit_first_digest": first.digest,
        "same_commit_second_digest": second.digest,
        "same_commit_same_digest": "yes" if first.digest == second.digest else "NO",
    }
