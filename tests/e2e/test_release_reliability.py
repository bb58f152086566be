"""Release flow faults: concurrent releases, an instance that never gets healthy, the approval gate."""

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import cast
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.deployments import run_deployment

from blocks.environment import ShiplineEnvironment
from shipline.config import HEARTBEAT_SECONDS, UNRESPONSIVE_AFTER_SECONDS, Settings
from shipline.docker import docker_client
from shipline.etcd_client import connect
from shipline.flow_runs import run_deployment_and_wait
from shipline.release.deploy import running_instances
from shipline.release.history import ReleaseStatus
from shipline.release.lifecycle import release_deployment, release_history
from shipline.release.plan import ReleaseRequest
from shipline.release.ports import reserved_ports
from shipline.spec import EnvironmentSettings
from shipline.stack.lifecycle import up
from shipline.stack.processes import ProcessTable
from tests.cli import shipline
from tests.e2e.test_release_flow import deliver, releases, request
from tests.waiting import as_the_ui, eventually


def test_two_releases_of_one_app_at_once_run_one_after_the_other(settings: Settings, app: str) -> None:
    first, second = request(settings, app, "v1", expect="v1"), request(settings, app, "v2", expect="v2")
    runs: dict[str, FlowRun] = {}
    threads = [
        threading.Thread(target=lambda r=r: runs.__setitem__(r.digest, deliver(r))) for r in (first, second)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=400)
    assert all(run.state is not None and run.state.is_completed() for run in runs.values())
    history = releases(settings, app)
    assert [r.status for r in history] == [ReleaseStatus.SUPERSEDED, ReleaseStatus.LIVE]
    # Strictly one at a time: the second release opened only after the first had finished.
    assert history[0].finished is not None and history[1].created >= history[0].finished
    (instance,) = running_instances(docker_client(settings.docker_url), app=app, env="pre")
    assert instance.release == 2


def test_instance_never_healthy_is_rolled_back_and_previous_keeps_serving(
    settings: Settings, app: str
) -> None:
    good = deliver(request(settings, app, "v1", expect="v1"))
    assert good.state is not None and good.state.is_completed()
    sick = request(
        settings,
        app,
        "v2",
        expect="v2",
        command=["sleep", "300"],
        health_timeout_seconds=3,
        stop_grace_seconds=1,
    )
    failed = deliver(sick)
    assert failed.state is not None and failed.state.is_failed()
    assert "not healthy within 3s" in str(failed.state.message)
    assert [r.status for r in releases(settings, app)] == [ReleaseStatus.LIVE, ReleaseStatus.ROLLED_BACK]
    (instance,) = running_instances(docker_client(settings.docker_url), app=app, env="pre")
    assert instance.release == 1
    assert httpx.get(f"http://127.0.0.1:{instance.port}/version.txt").text == "v1\n"


@pytest.fixture
def gated_env() -> Iterator[str]:
    """An environment served by the pre worker that requires approval."""
    ShiplineEnvironment(
        work_pool="pre", port_range_start=23000, port_range_end=23099, requires_approval=True
    ).save("gated", overwrite=True)
    yield "gated"
    with get_client(sync_client=True) as client:
        block_id = ShiplineEnvironment.for_env("gated")._block_document_id
        assert block_id is not None
        client.delete_block_document(block_id)


def _paused_run(app: str) -> FlowRun:
    with get_client(sync_client=True) as client:

        def paused() -> FlowRun | None:
            for run in client.read_flow_runs(
                deployment_filter=DeploymentFilter(
                    name=DeploymentFilterName(any_=[release_deployment("pre").split("/")[1]])
                ),
                flow_run_filter=FlowRunFilter(),
                limit=20,
                sort="START_TIME_DESC",  # type: ignore[arg-type]
            ):
                if run.state and run.state.is_paused() and run.parameters["request"]["app"] == app:
                    return run
            return None

        return eventually(
            paused, timeout=90, interval=0.5, what=f"a release run of {app} paused for approval"
        )


def _answer_in_the_ui_form(settings: Settings, run_id: UUID, approve: bool, comment: str) -> None:
    """What the UI's form sends when an operator submits the gate."""
    response = as_the_ui(
        f"{settings.prefect_api_url}/flow_runs/{run_id}/resume",
        {"run_input": {"approve": approve, "comment": comment, "reviewer": "ui-operator"}},
    )
    assert response.status_code in (200, 201) and response.json()["status"] == "ACCEPT", response.text


@pytest.mark.parametrize(
    ("gate", "verb", "answered_in"),
    [
        ("environment", "approve", "shell"),
        ("spec", "approve", "ui"),
        ("spec", "reject", "shell"),
    ],
)
def test_release_waits_for_approval(
    settings: Settings, app: str, gated_env: str, gate: str, verb: str, answered_in: str
) -> None:
    """The gate asked by the environment's block (any app there), or by the app's own spec (pre, whose
    block asks nothing), answered from the shell or through the UI's form."""
    req: ReleaseRequest = request(settings, app, "v1", expect="v1")
    if gate == "environment":
        req = req.model_copy(update={"env": gated_env})
    else:
        service = req.service.model_copy(
            update={"environments": {"pre": EnvironmentSettings(requires_approval=True)}}
        )
        req = req.model_copy(update={"service": service})
    env = req.env
    result: dict[str, FlowRun] = {}
    worker = threading.Thread(
        target=lambda: result.__setitem__(
            "run",
            run_deployment_and_wait(
                release_deployment("pre"), parameters={"request": req.model_dump(mode="json")}, timeout=300
            ),
        )
    )
    worker.start()
    paused = _paused_run(app)
    assert running_instances(docker_client(settings.docker_url), app=app, env=env) == []
    if answered_in == "ui":
        _answer_in_the_ui_form(settings, paused.id, verb == "approve", "from the test")
    else:
        answer = shipline(verb, str(paused.id), "-m", "from the test", timeout=60)
        assert answer.returncode == 0, answer.stderr
    worker.join(timeout=300)
    state = result["run"].state
    assert state is not None
    instances = running_instances(docker_client(settings.docker_url), app=app, env=env)
    if verb == "approve":
        assert state.is_completed(), state
        assert len(instances) == 1
        (release,) = release_history(app, env, etcd_url=settings.etcd_url)
        who = "ui-operator" if answered_in == "ui" else "(OS user of shipline approve)"
        assert release.approval is not None and who in release.approval, release.approval
        assert (
            release.approval.startswith("approved by ") and "(unverified): from the test" in release.approval
        )
        listed = shipline("releases", app, "--env", env)
        assert release.approval in listed.stdout, listed.stdout
    else:
        assert state.is_failed() and "not approved: from the test" in str(state.message)
        assert instances == []


def _kill_worker_and_its_run(settings: Settings, flow_run_id: str) -> None:
    """SIGKILL the pre worker's process group and the flow run's process: the worker's host died."""
    record = ProcessTable(settings.run_dir).running("worker-pre")
    assert record is not None, "the stack's pre worker is not running"
    os.killpg(record.pid, signal.SIGKILL)
    assert eventually(  # a kill is delivered asynchronously
        lambda: not record.alive, timeout=10, what=f"the pre worker (pid {record.pid}) gone after SIGKILL"
    )
    marker = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            if marker in environ.read_bytes().split(b"\0"):
                os.kill(int(environ.parent.name), signal.SIGKILL)


def _reservations_of(settings: Settings, app: str) -> list[int]:
    """The ports etcd holds reserved for ``app`` on the stack's address."""

    async def read() -> list[int]:
        async with connect(settings.etcd_url) as etcd:
            held = await reserved_ports(etcd, settings.host)
        return sorted(port for port, reservation in held.items() if reservation.app == app)

    return asyncio.run(read())


def _state_of(flow_run_id: str) -> StateType | None:
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(flow_run_id)).state
    return state.type if state else None


def test_worker_killed_mid_deploy_leaves_the_live_release_serving(settings: Settings, app: str) -> None:
    good = deliver(request(settings, app, "v1", expect="v1"))
    assert good.state is not None and good.state.is_completed()
    stuck = request(settings, app, "v2", expect="v2", command=["sleep", "600"], health_timeout_seconds=600)
    started = cast(
        FlowRun,
        run_deployment(
            release_deployment("pre"), parameters={"request": stuck.model_dump(mode="json")}, timeout=0
        ),
    )
    client = docker_client(settings.docker_url)
    assert eventually(
        lambda: any(i.release == 2 for i in running_instances(client, app=app, env="pre")),
        timeout=120,
        interval=0.2,
        what="an instance of release 2",
    )

    _kill_worker_and_its_run(settings, str(started.id))
    up(settings, only={"worker-pre"}, report=lambda _: None)
    live = next(i for i in running_instances(client, app=app, env="pre") if i.release == 1)
    assert httpx.get(f"http://127.0.0.1:{live.port}/version.txt").text == "v1\n"

    # Prefect marks the silent run Crashed (Shipline's unresponsive-run automation) ...
    assert eventually(
        lambda: _state_of(str(started.id)) is StateType.CRASHED,
        timeout=UNRESPONSIVE_AFTER_SECONDS + 3 * HEARTBEAT_SECONDS,
        interval=2,
        what=f"flow run {started.id} marked Crashed",
    )
    # ... the dead deploy's lock lease expires, and the next release fails the abandoned one and goes live.
    fixed = deliver(request(settings, app, "v3", expect="v3"))
    assert fixed.state is not None and fixed.state.is_completed(), fixed.state
    assert [r.status for r in releases(settings, app)] == [
        ReleaseStatus.SUPERSEDED,
        ReleaseStatus.FAILED,
        ReleaseStatus.LIVE,
    ]
    (instance,) = running_instances(client, app=app, env="pre")
    assert instance.release == 3
    assert httpx.get(f"http://127.0.0.1:{instance.port}/version.txt").text == "v3\n"
    assert _reservations_of(settings, app) == []  # the dead deploy's, given back by the next (not in 900 s)
