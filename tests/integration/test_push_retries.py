"""A registry that is down during the push: the task retries with backoff, then fails clearly."""

from pathlib import Path
from uuid import UUID

from prefect import flow
from prefect.client.orchestration import get_client

from blocks.registry import ShiplineRegistry
from shipline.build.app_image import BuiltImage
from shipline.build.registry import PushedImage
from shipline.config import Settings
from shipline.spec import parse_spec
from tasks.base_images import BaseLayers
from tasks.image import push_app_image

SPEC = """\
app: {app}
build: {{command: "true", artifact: x}}
image:
  os: {{name: busybox, version: "1"}}
  middleware: {{name: host-jre, version: "1"}}
  command: [sh]
"""


def test_push_to_a_dead_registry_is_retried_then_fails(
    settings: Settings, app: str, registry_block: ShiplineRegistry, tmp_path: Path
) -> None:
    spec = parse_spec(SPEC.format(app=app))
    # The registry block points where nothing listens: the registry is down.
    ShiplineRegistry(address="127.0.0.1:1").save("default", overwrite=True)
    (tmp_path / "manifest.json").write_text('{"layers": [], "config": {"digest": "sha256:0"}}')
    built = BuiltImage(
        repository=f"127.0.0.1:1/apps/{app}",
        tag="a" * 40,
        directory=tmp_path,
        digest="sha256:0",
        media_type="application/vnd.docker.distribution.manifest.v2+json",
        base_repository="127.0.0.1:1/shipline/middleware/host-jre",
    )
    base = "127.0.0.1:1/shipline"
    layers = BaseLayers(
        os=PushedImage(repository=f"{base}/os/busybox", tag="1", digest="sha256:1"),
        middleware=PushedImage(repository=f"{base}/middleware/host-jre", tag="1", digest="sha256:2"),
    )
    attempt = push_app_image.with_options(retry_delay_seconds=[0.1, 0.2, 0.4])

    @flow(name="push-retries-test")
    def push_once() -> dict[str, str]:
        state = attempt(spec, built, layers, return_state=True)
        return {"type": state.type.value, "task_run": str(state.state_details.task_run_id)}

    outcome = push_once()
    assert outcome["type"] == "FAILED"
    with get_client(sync_client=True) as prefect:
        task_run = prefect.read_task_run(UUID(outcome["task_run"]))
    assert task_run.run_count == 4  # the first attempt and three retries
    assert task_run.state is not None
    assert f"push of 127.0.0.1:1/apps/{app}:{'a' * 40} failed" in str(task_run.state.message)
