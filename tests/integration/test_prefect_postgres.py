"""Prefect's server on PostgreSQL (``SHIPLINE_PREFECT_DATABASE=postgresql``): a second stack in its own home
starts the stack's PostgreSQL, creates Prefect's database there, and Prefect migrates and is provisioned
(work pools, blocks, deployments) in it — no SQLite file; then PostgreSQL restarts under runs in flight and
everything recovers without an operator; then the stack stops with ``shipline down``."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any, cast
from uuid import UUID

import httpx
import psycopg
import pytest

from shipline.config import PREFECT_DATABASE, PROJECT_ROOT, Settings
from shipline.stack.components import Postgres
from shipline.stack.processes import ProcessTable
from shipline.stack.supervise import read_supervision
from tests.cli import shipline
from tests.images import free_ports
from tests.private_stack import PrivateStack
from tests.waiting import eventually

NAPPING = "tests/napping_flow.py:napping"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory, settings: Settings) -> Iterator[PrivateStack]:
    home = tmp_path_factory.mktemp("prefect-postgres") / "home"
    prefect, postgres = free_ports(2)
    env = {
        **os.environ,
        "SHIPLINE_HOME": str(home),
        "SHIPLINE_PREFECT_PORT": str(prefect),
        "SHIPLINE_POSTGRES_PORT": str(postgres),
        "SHIPLINE_PREFECT_DATABASE": "postgresql",
        "SHIPLINE_DOCKER_SOCKET": str(settings.docker_socket),
    }
    for name in [k for k in env if k.startswith("PREFECT_")]:
        del env[name]  # the second stack's own Prefect settings, not the test session's
    stack = PrivateStack(
        Settings(home=home, prefect_port=prefect, postgres_port=postgres, prefect_database="postgresql"), env
    )
    try:
        stack.up("postgres", "prefect", "worker-pre")
        yield stack
    finally:
        stopped = shipline("down", env=env, timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        assert "prefect" in stopped.stdout and "postgres" in stopped.stdout


def test_prefect_runs_and_is_provisioned_on_the_stacks_postgresql(private: PrivateStack) -> None:
    home = private.settings.home
    assert httpx.get(f"{private.settings.prefect_api_url}/health", trust_env=False).text.strip() == "true"
    with psycopg.connect(
        host=private.settings.host,
        port=private.settings.postgres_port,
        user="shipline",
        dbname=PREFECT_DATABASE,
        connect_timeout=5,
    ) as connection:
        pools = {row[0] for row in connection.execute("SELECT name FROM work_pool")}
        deployments = connection.execute("SELECT count(*) FROM deployment").fetchone()
        # Blocks were saved (encrypted) with the key from the credential file: none in the database.
        keys = connection.execute("SELECT key FROM configuration WHERE key = 'ENCRYPTION_KEY'").fetchall()
    assert keys == []
    assert (home / "credentials" / "prefect-server.env").stat().st_mode & 0o077 == 0
    assert {"ci", "pre", "prod"} <= pools
    assert deployments is not None and deployments[0] > 0
    assert not list(private.settings.prefect_home.glob("*.db")), "Prefect must not have used SQLite"


def _states(runs: list[UUID]) -> list[str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        types = [client.read_flow_run(run).state_type for run in runs]
    return [kind.value if kind is not None else "NONE" for kind in types]


def _ended(runs: list[UUID]) -> list[str] | None:
    """The runs' states once every one is final, else None."""
    states = _states(runs)
    return states if set(states) <= FINAL else None


def _supervised_pid(settings: Settings, name: str) -> tuple[int | None, int]:
    state = read_supervision(settings.run_dir, name)
    assert state is not None, f"{name} is not supervised"
    return state.pid, state.restarts


def test_postgresql_restarted_under_runs_in_flight_needs_no_operator(private: PrivateStack) -> None:
    from prefect import Flow
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment

    s = private.settings
    with private.client():
        flow = cast(Flow[..., Any], Flow.from_source(source=str(PROJECT_ROOT), entrypoint=NAPPING))
        cast(Any, flow).to_deployment(name="restart-test", work_pool_name="pre").apply()
        # From synchronous code, Prefect's dual sync/async function returns the flow run itself.
        runs = [
            cast(FlowRun, run_deployment("napping/restart-test", parameters={"seconds": 3}, timeout=0)).id
            for _ in range(4)
        ]
        eventually(lambda: "RUNNING" in _states(runs), timeout=90, interval=0.5, what="a run in flight")
        before = {name: _supervised_pid(s, name) for name in ("prefect", "worker-pre")}

        # PostgreSQL stopped by the pid the stack recorded, while runs start, sleep and finish.
        table = ProcessTable(s.run_dir)
        record = table.running("postgres")
        assert record is not None, "the private stack's PostgreSQL is not running"
        in_flight = [state for state in _states(runs) if state not in FINAL]
        os.kill(record.pid, signal.SIGINT)  # PostgreSQL's fast shutdown, as `down` stops it
        eventually(lambda: not record.alive, timeout=30, what="PostgreSQL to stop")
        assert in_flight, "every run had ended before PostgreSQL stopped: nothing was in flight"
        assert not Postgres(s).probe()
        time.sleep(5)  # the outage: runs end and report meanwhile; nothing answers them from the database
        private.up("postgres")  # the stack starts it again, on the same data

        assert httpx.get(f"{s.prefect_api_url}/health", trust_env=False).text.strip() == "true"
        ended = eventually(
            lambda: _ended(runs),
            timeout=120,
            interval=1,
            what="every run in flight in a final state",
        )
        assert ended == ["COMPLETED"] * len(runs), ended
        after = cast(FlowRun, run_deployment("napping/restart-test", parameters={"seconds": 0}, timeout=120))
        assert after.state is not None and after.state.is_completed(), after.state
    # Nobody restarted the server or the worker: the same processes answer, none restarted by its supervisor.
    assert {name: _supervised_pid(s, name) for name in before} == before
