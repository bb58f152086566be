"""A registry that is down during the push: the task retries with backoff, then fails clearly."""

from uuid import UUID

from prefect import flow
from prefect.client.orchestration import get_client

from blocks.registry import ShiplineRegistry
from shipline.config import Settings
from shipline.docker import docker_client
from shipline.spec import parse_spec
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
    settings: Settings, app: str, registry_block: ShiplineRegistry
) -> None:
    spec = parse_spec(SPEC.format(app=app))
    client = docker_client(settings.docker_url)
    # The registry block points where nothing listens: the registry is down.
    ShiplineRegistry(address="127.0.0.1:1").save("default", overwrite=True)
    client.api.tag(client.images.list()[0].id, f"127.0.0.1:1/apps/{app}", "a" * 40)
    attempt = push_app_image.with_options(retry_delay_seconds=[0.1, 0.2, 0.4])

    @flow(name="push-retries-test")
    def push_once() -> dict[str, str]:
        state = attempt(spec, "a" * 40, return_state=True)
        return {"type": state.type.value, "task_run": str(state.state_details.task_run_id)}

    try:
        outcome = push_once()
    finally:
        client.images.remove(f"127.0.0.1:1/apps/{app}:{'a' * 40}")
    assert outcome["type"] == "FAILED"
    with get_client(sync_client=True) as prefect:
        task_run = prefect.read_task_run(UUID(outcome["task_run"]))
    assert task_run.run_count == 4  # the first attempt and three retries
    assert task_run.state is not None
    assert f"push of 127.0.0.1:1/apps/{app}:{'a' * 40} failed" in str(task_run.state.message)
