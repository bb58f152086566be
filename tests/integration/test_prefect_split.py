"""Prefect's API and its background services as two processes (``SHIPLINE_PREFECT_SERVICES=split``): a
stack of its own (its own home, free ports, PostgreSQL, Redis) runs ``prefect server start --no-services``
and ``prefect server services start`` apart, meeting in Redis. Split without Redis, events stay in the API
process's memory: no task run would be recorded and no automation would fire. Here task runs are recorded,
an automation fires, Redis refuses a client without its password, and the services' process killed by its
pid leaves the API answering, its events waiting in Redis until ``up`` starts it again.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import httpx
import pytest
import redis

from shipline.config import PROJECT_ROOT, Settings, read_environment_file
from shipline.stack.credentials import redis_password
from shipline.stack.processes import ProcessRecord, ProcessTable
from shipline.stack.supervise import read_supervision
from shipline.stack.units import write_units
from tests.cli import shipline
from tests.images import free_ports
from tests.private_stack import PrivateStack
from tests.waiting import eventually

FLOW_WITH_TASKS = (
    "from prefect import flow, task\n"
    "@task\n"
    "def double(x: int) -> int:\n"
    "    return 2 * x\n"
    "@flow(name='split-check')\n"
    "def split_check() -> int:\n"
    "    return sum(future.result() for future in double.map([1, 2, 3]))\n"
    "state = split_check(return_state=True)\n"
    "print(state.state_details.flow_run_id, state.type.value)\n"
)
SERVER = ("redis", "prefect", "prefect-services")


class SplitStack(PrivateStack):
    """PostgreSQL, Redis, Prefect's API and its services' process, in a home of this module's."""

    def run_flow(self) -> UUID:
        """Run a flow of three tasks in a process of its own, as a client of this stack; its run's id."""
        done = subprocess.run(
            [sys.executable, "-c", FLOW_WITH_TASKS],
            env={**self.env, **self.settings.prefect_environment()},
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        run_id, state = done.stdout.strip().splitlines()[-1].split()
        assert state == "COMPLETED", done.stdout[-3000:]
        return UUID(run_id)

    def task_run_states(self, run: UUID) -> list[str]:
        """The states of the task runs the API has recorded for flow run ``run``."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        with self.client(), get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run])))
        return sorted(run.state_type.value if run.state_type else "NONE" for run in runs)


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SplitStack]:
    home = tmp_path_factory.mktemp("prefect-split") / "home"
    prefect, postgres, redis_port = free_ports(3)
    env = {
        **os.environ,
        "SHIPLINE_HOME": str(home),
        "SHIPLINE_PREFECT_PORT": str(prefect),
        "SHIPLINE_POSTGRES_PORT": str(postgres),
        "SHIPLINE_REDIS_PORT": str(redis_port),
        "SHIPLINE_PREFECT_DATABASE": "postgresql",
        "SHIPLINE_PREFECT_SERVICES": "split",
        "PYTHONPATH": str(PROJECT_ROOT),  # this checkout's code in every process the stack starts
    }
    for name in [k for k in env if k.startswith("PREFECT_")]:
        del env[name]  # the second stack's own Prefect settings, not the test session's
    settings = Settings(
        home=home,
        prefect_port=prefect,
        postgres_port=postgres,
        redis_port=redis_port,
        prefect_database="postgresql",
        prefect_services="split",
    )
    stack = SplitStack(settings, env)
    try:
        stack.up("postgres", *SERVER)
        yield stack
    finally:
        stopped = shipline("down", env=env, timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        for name in (*SERVER, "postgres"):
            assert name in stopped.stdout, stopped.stdout
        assert not [r.name for r in ProcessTable(settings.run_dir).all() if r.alive]


def _serving_pid(settings: Settings, name: str) -> int:
    """The pid of the program a component's supervisor runs (the record's pid is the supervisor's)."""
    state = read_supervision(settings.run_dir, name)
    assert state is not None and state.pid is not None, f"{name} is not running under its supervisor"
    return state.pid


def _command_line(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().rstrip("\0").split("\0")


def test_api_and_services_run_as_two_processes_listed_by_status(split: SplitStack) -> None:
    s = split.settings
    status = shipline("status", "--json", env=split.env)
    components = json.loads(status.stdout)["components"]
    for name in SERVER:
        assert components[name]["state"] == "up", components[name]
        assert components[name]["host"] == "main" and components[name]["managed"], components[name]
    api, services = _serving_pid(s, "prefect"), _serving_pid(s, "prefect-services")
    assert api != services
    assert "--no-services" in _command_line(api)
    assert _command_line(services)[-3:] == ["server", "services", "start"]
    assert httpx.get(f"{s.prefect_api_url}/health", trust_env=False).text.strip() == "true"


def test_redis_answers_its_password_only(split: SplitStack) -> None:
    s = split.settings
    password = redis_password(s)
    with redis.Redis(host=s.host, port=s.redis_port, password=password) as client:
        assert client.ping() is True
    with redis.Redis(host=s.host, port=s.redis_port) as anonymous, pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    with (
        redis.Redis(host=s.host, port=s.redis_port, password="not-" + password) as wrong,
        pytest.raises(redis.AuthenticationError),
    ):
        wrong.ping()
    # The password is in two files only the stack's user reads, never on Redis's command line.
    record = ProcessTable(s.run_dir).running("redis")
    assert record is not None
    assert password not in " ".join(_command_line(record.pid))
    for path in (s.redis_credentials, s.redis_dir / "redis.conf"):
        assert path.stat().st_mode & 0o077 == 0, path


def test_task_runs_are_recorded(split: SplitStack) -> None:
    run = split.run_flow()
    # The task-run recorder runs in the services' process: the states reach it through Redis.
    states = eventually(
        lambda: (states := split.task_run_states(run)) == ["COMPLETED"] * 3 and states,
        timeout=60,
        interval=0.5,
        what="the flow run's three task runs recorded Completed",
    )
    assert states == ["COMPLETED"] * 3


def test_an_automation_fires(split: SplitStack) -> None:
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.events.actions import PauseWorkPool
    from prefect.events.schemas.automations import EventTrigger, Posture

    name = f"split-{uuid.uuid4().hex[:8]}"
    with split.client(), get_client(sync_client=True) as client:
        pool = client.create_work_pool(WorkPoolCreate(name=name, type="process"))
        # Created through the API after the services' process started: it reaches their triggers.
        Automation(
            name=name,
            trigger=EventTrigger(
                expect={"shipline.test.split"},
                match={"prefect.resource.id": f"shipline.test.{name}"},
                posture=Posture.Reactive,
                threshold=1,
                within=timedelta(0),
            ),
            actions=[PauseWorkPool(source="selected", work_pool_id=pool.id)],
        ).create()
        event = {
            "id": str(uuid.uuid4()),
            "occurred": datetime.now(UTC).isoformat(),
            "event": "shipline.test.split",
            "resource": {"prefect.resource.id": f"shipline.test.{name}"},
        }
        # The event and the action in between go: API -> Redis -> triggers and actions -> API.
        eventually(
            lambda: client._client.post("/events", json=[event]).status_code == 204,
            timeout=10,
            what="the API to take the event",
        )
        eventually(
            lambda: client.read_work_pool(name).is_paused,
            timeout=60,
            interval=0.5,
            what=f"the automation to pause work pool {name}",
        )


def test_services_killed_leave_the_api_answering_and_up_starts_them_again(split: SplitStack) -> None:
    s = split.settings
    table = ProcessTable(s.run_dir)
    record = table.running("prefect-services")
    assert record is not None, "the split stack's services are not running"
    api = _serving_pid(s, "prefect")
    os.killpg(record.pid, signal.SIGKILL)  # its supervisor and the services, by the pid `up` recorded
    eventually(lambda: not record.alive, timeout=10, what="the services' process to die")
    down = json.loads(shipline("status", "--json", env=split.env).stdout)["components"]
    assert down["prefect-services"]["state"] == "down", down["prefect-services"]
    assert down["prefect"]["state"] == "up" and _serving_pid(s, "prefect") == api

    # A flow runs meanwhile: the API takes its task runs' states, nothing records them yet.
    run = split.run_flow()
    assert split.task_run_states(run) == []

    split.up(*SERVER)
    again = table.running("prefect-services")
    assert again is not None and again.pid != record.pid
    assert _serving_pid(s, "prefect") == api, "up restarted the API"
    # What happened while the services were away waited in Redis.
    eventually(
        lambda: split.task_run_states(run) == ["COMPLETED"] * 3,
        timeout=60,
        interval=0.5,
        what="the task runs of the outage recorded once the services are back",
    )


def test_postgresql_restarted_needs_no_operator_for_the_api_or_the_services(split: SplitStack) -> None:
    s = split.settings
    before = {name: _serving_pid(s, name) for name in ("prefect", "prefect-services")}
    record = ProcessTable(s.run_dir).running("postgres")
    assert record is not None, "the split stack's PostgreSQL is not running"
    os.kill(record.pid, signal.SIGINT)  # PostgreSQL's fast shutdown, as `down` stops it
    eventually(functools.partial(_dead, record), timeout=30, what="PostgreSQL to stop")
    time.sleep(5)  # the outage: the services' loops meet a database that refuses them
    split.up("postgres")  # the stack starts it again, on the same data
    run = split.run_flow()
    eventually(  # recorded by the same services' process, which found the database again by itself
        lambda: split.task_run_states(run) == ["COMPLETED"] * 3,
        timeout=120,
        interval=0.5,
        what="a new run's task runs recorded after PostgreSQL's restart",
    )
    assert {name: _serving_pid(s, name) for name in before} == before, "a server process restarted"


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, trust_env=False, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _dead(record: ProcessRecord) -> bool:
    return not record.alive


def _unit_process(unit: Path, settings: Settings) -> subprocess.Popen[bytes]:
    """Start a unit's ExecStart with its Environment= and EnvironmentFile= lines, as systemd would."""
    environment = {"PATH": os.environ["PATH"], "HOME": str(settings.home), "PYTHONPATH": str(PROJECT_ROOT)}
    command: list[str] = []
    for line in unit.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "ExecStart":
            command = value.split()
        elif key == "Environment":
            name, _, setting = value.partition("=")
            environment[name] = setting
        elif key == "EnvironmentFile":
            environment |= read_environment_file(Path(value))
    log = (settings.log_dir / f"{unit.stem}-unit.log").open("ab")
    return subprocess.Popen(
        command, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def test_the_server_roles_units_run_the_split_server(split: SplitStack, tmp_path: Path) -> None:
    s = split.settings
    table = ProcessTable(s.run_dir)
    for name in ("prefect-services", "prefect"):  # the stack's own two stop; the units' take over
        record = table.running(name)
        assert record is not None, f"{name} is not running"
        os.killpg(record.pid, signal.SIGTERM)
        eventually(functools.partial(_dead, record), timeout=30, what=f"{name} stopped")
    written = write_units(tmp_path, ["server"], s)
    assert sorted(p.name for p in written) == [
        "shipline-prefect-services.service",
        "shipline-prefect.service",
        "shipline-redis.service",
    ]
    started = [
        _unit_process(tmp_path / f"{name}.service", s)
        for name in ("shipline-prefect", "shipline-prefect-services")
    ]
    try:
        eventually(
            functools.partial(_answers, f"{s.prefect_api_url}/health"),
            timeout=120,
            interval=0.5,
            what="the API of the unit shipline-prefect",
        )
        # It requires the credential it got from the clients' file, as the stack's own server does.
        assert httpx.get(f"{s.prefect_api_url}/admin/version", trust_env=False).status_code == 401
        run = split.run_flow()
        eventually(  # recorded by the services of the unit shipline-prefect-services, through Redis
            lambda: split.task_run_states(run) == ["COMPLETED"] * 3,
            timeout=90,
            interval=0.5,
            what="task runs recorded by the units' services",
        )
    finally:
        for process in reversed(started):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
    split.up(*SERVER)  # the stack's own again, for `down` at the end of the module
