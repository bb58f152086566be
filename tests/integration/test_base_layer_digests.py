"""Base layers by the digest Shipline recorded, on the real engine, registry, etcd and Prefect: a tag pushed
over with the registry's login does not change what an app is built on.

Every test names its own busybox OS and host-jre middleware version, so no other test's layers are touched.
"""

import uuid
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import docker
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    LogFilter,
    LogFilterFlowRunId,
    LogFilterLevel,
)

from flows.base_images import base_images
from shipline.build.base_layers import EtcdBaseLayerRecords, LayerKind
from shipline.build.images import ensure_middleware_image, ensure_os_image
from shipline.build.registry import PushedImage, Registry
from shipline.build.rootfs import DebianArchive
from shipline.config import Settings
from shipline.docker import docker_client
from shipline.errors import BuildError
from shipline.spec import AppSpec, LayerRef, parse_spec
from tasks.base_images import BaseLayers, prepare_base_layers
from tasks.image import build_app_layer, push_app_image
from tests.images import busybox_web_image
from tests.waiting import eventually

COMMITTED = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
SHA = "d" * 40
SPEC = """\
app: {app}
build: {{command: "true", artifact: hello.txt}}
image:
  os: {{name: busybox, version: "{version}"}}
  middleware: {{name: host-jre, version: "{version}"}}
  command: [cat, /app/hello.txt]
"""


@flow(name="base-layer-digests-test")
def build_app(spec: AppSpec, workspace: Path) -> PushedImage:
    """The delivery's image stages: base layers, the app layer on them, the push with its artifact."""
    layers = prepare_base_layers(spec.image)
    built = build_app_layer(
        spec, workspace / "hello.txt", workspace, layers.middleware, SHA, COMMITTED, "file:///x"
    )
    return push_app_image(spec, built, layers)


@pytest.fixture
def client(settings: Settings) -> docker.DockerClient:
    client = docker_client(settings.docker_url)
    Registry.of_stack(settings).log_in(client)
    return client


@pytest.fixture
def spec(app: str) -> AppSpec:
    return parse_spec(SPEC.format(app=app, version=f"g{uuid.uuid4().hex[:8]}"))


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "hello.txt").write_text("hello\n")
    return tmp_path


def manifest_layers(registry: Registry, repository: str, digest: str) -> list[str]:
    with registry.api() as api:
        document, _ = api.manifest_document(repository, digest)
    return [layer["digest"] for layer in document["layers"]]


def warnings_of(flow_run_id: UUID) -> list[str]:
    with get_client(sync_client=True) as prefect:
        logs = prefect.read_logs(
            log_filter=LogFilter(
                flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]), level=LogFilterLevel(ge_=30)
            )
        )
    return [log.message for log in logs]


def image_artifact(app: str, flow_run_id: UUID) -> str:
    with get_client(sync_client=True) as prefect:
        (artifact,) = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[f"image-{app}"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            )
        )
    return str(artifact.data)


def test_a_middleware_tag_pushed_over_does_not_change_what_the_app_is_built_on(
    settings: Settings, client: docker.DockerClient, spec: AppSpec, workspace: Path
) -> None:
    registry, records = Registry.of_stack(settings), EtcdBaseLayerRecords(settings.etcd_url)
    first = build_app(spec, workspace)
    recorded = records.get(LayerKind.MIDDLEWARE, spec.image.middleware)
    os_record = records.get(LayerKind.OS, spec.image.os)
    assert recorded is not None and os_record is not None
    middleware = registry.middleware_repository(spec.image.middleware)
    tag = f"{middleware}:{spec.image.middleware.version}"

    # Someone with the registry's login pushes another image over the middleware's tag.
    pushed = busybox_web_image(client, middleware, spec.image.middleware.version, {"evil": "1"})
    assert registry.manifest_digest(middleware, spec.image.middleware.version) == pushed != recorded.digest

    state = build_app(spec, workspace, return_state=True)
    assert state.is_completed(), state.message
    again = state.result()
    assert isinstance(again, PushedImage)
    assert again.digest == first.digest  # the same commit on the same (recorded) middleware
    app_layers = manifest_layers(registry, again.repository, again.digest)
    assert app_layers[:-1] == manifest_layers(registry, middleware, recorded.digest)
    assert app_layers[:-1] != manifest_layers(registry, middleware, pushed)
    client.images.pull(again.by_digest)
    assert (
        client.images.get(again.by_digest).labels["shipline.middleware"] == f"{middleware}@{recorded.digest}"
    )
    assert client.containers.run(again.by_digest, remove=True, network_mode="none") == b"hello\n"

    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    (warning,) = eventually(
        lambda: warnings_of(flow_run_id), timeout=30, what="the warning of the tag pushed over"
    )
    assert f"the tag {tag} points at {pushed}, not at {recorded.digest}" in warning
    assert "rebuild-base-layers" in warning
    provenance = image_artifact(spec.app, flow_run_id)
    assert f"`{again.by_digest}`" in provenance
    assert f"`{middleware}@{recorded.digest}`" in provenance
    assert f"`{registry.os_repository(spec.image.os)}@{os_record.digest}`" in provenance


def test_a_recorded_digest_gone_fails_the_stage_until_the_layers_are_rebuilt(
    settings: Settings, spec: AppSpec, workspace: Path
) -> None:
    registry, records = Registry.of_stack(settings), EtcdBaseLayerRecords(settings.etcd_url)
    build_app(spec, workspace)
    recorded = records.get(LayerKind.MIDDLEWARE, spec.image.middleware)
    assert recorded is not None
    middleware = registry.middleware_repository(spec.image.middleware)
    with registry.api() as api:
        assert api.delete_manifest(middleware.removeprefix(f"{registry.address}/"), recorded.digest)

    with pytest.raises(BuildError) as caught:
        build_app(spec, workspace)
    assert caught.value.message == (
        f"the middleware layer host-jre {spec.image.middleware.version}: its recorded digest "
        f"{recorded.digest} is no longer in the registry ({middleware})"
    )
    assert caught.value.hint and "rebuild-base-layers" in caught.value.hint

    # What the hint says: the rebuild flow builds and records the layers anew, and builds work again.
    rebuilt = base_images(spec.image)["layers"]
    assert isinstance(rebuilt, BaseLayers) and rebuilt.middleware.digest != recorded.digest
    again = records.get(LayerKind.MIDDLEWARE, spec.image.middleware)
    assert again is not None and again.digest == rebuilt.middleware.digest
    assert build_app(spec, workspace).repository == registry.app_repository(spec.app)


def test_a_layer_without_a_record_is_built_and_recorded_not_adopted_from_its_tag(
    settings: Settings, client: docker.DockerClient, tmp_path: Path
) -> None:
    version = f"n{uuid.uuid4().hex[:8]}"
    os_layer, middleware_layer = (
        LayerRef(name="busybox", version=version),
        LayerRef(name="host-jre", version=version),
    )
    registry, records = Registry.of_stack(settings), EtcdBaseLayerRecords(settings.etcd_url)
    middleware = registry.middleware_repository(middleware_layer)
    planted = busybox_web_image(client, middleware, version, {"planted": "1"})  # before Shipline built it
    lines: list[str] = []
    os_image = ensure_os_image(
        client,
        registry=registry,
        records=records,
        layer=os_layer,
        cache_dir=tmp_path,
        debian=DebianArchive.from_settings(settings),
        log=lines.append,
    )
    built = ensure_middleware_image(
        client,
        registry=registry,
        records=records,
        layer=middleware_layer,
        os_image=os_image,
        log=lines.append,
    )
    assert built.digest != planted
    assert f"{middleware}:{version}: no record of a build by Shipline in this registry: building it" in lines
    assert registry.manifest_digest(middleware, version) == built.digest  # the tag is Shipline's again
    recorded = records.get(LayerKind.MIDDLEWARE, middleware_layer)
    assert recorded is not None
    assert (recorded.repository, recorded.digest, recorded.parent) == (
        middleware,
        built.digest,
        os_image.digest,
    )
    os_record = records.get(LayerKind.OS, os_layer)
    assert os_record is not None and (os_record.digest, os_record.parent) == (os_image.digest, None)
    # Built on the OS image: its layers first.
    os_layers = manifest_layers(registry, os_image.repository, os_image.digest)
    assert manifest_layers(registry, middleware, built.digest)[: len(os_layers)] == os_layers
