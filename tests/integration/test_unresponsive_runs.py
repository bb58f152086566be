"""Runs whose worker died, on the stack's real Prefect server and `shipline web`: a run that is still Running
and silent is marked Crashed; a finished run, or one that sent a heartbeat, is left alone — so the
automation never fails on a run in a final state (the log line "already in terminal state" is gone)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from uuid import UUID

import httpx
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import CallWebhook
from prefect.states import Completed, Running

from shipline.config import Settings
from shipline.stack.provision import CRASH_UNRESPONSIVE_RUNS, UNRESPONSIVE_WEBHOOK
from shipline.stack.unresponsive import crash_if_unresponsive, last_heartbeat
from tests.waiting import eventually

QUIET = timedelta(seconds=2)


@flow(name="unresponsive-run-test")
def silent() -> None:
    """Never runs: its runs are created in the state a test needs."""


def new_run(state: str) -> UUID:
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(silent, state=Running() if state == "running" else Completed())
    return run.id


def state_of(run: UUID) -> StateType | None:
    with get_client(sync_client=True) as client:
        found = client.read_flow_run(run).state
    return found.type if found else None


def judge(run: UUID, quiet: timedelta = QUIET) -> tuple[bool, str]:
    async def ask() -> tuple[bool, str]:
        async with get_client() as client:
            outcome = await crash_if_unresponsive(client, run, quiet=quiet)
        return outcome.crashed, outcome.reason

    return asyncio.run(ask())


def heartbeat(run: UUID) -> None:
    """A heartbeat event of ``run``, as its process sends it."""
    event = {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": "prefect.flow-run.heartbeat",
        "resource": {"prefect.resource.id": f"prefect.flow-run.{run}"},
    }
    with get_client(sync_client=True) as client:
        client._client.post("/events", json=[event]).raise_for_status()


def heard(run: UUID) -> bool:
    async def ask() -> bool:
        async with get_client() as client:
            return (
                await last_heartbeat(client, run, since=datetime.now(UTC) - timedelta(minutes=1)) is not None
            )

    return asyncio.run(ask())


def test_a_silent_running_run_is_crashed_and_a_finished_one_is_left_alone(settings: Settings) -> None:
    running, finished = new_run("running"), new_run("completed")
    crashed, reason = judge(running)
    assert crashed, reason
    assert state_of(running) is StateType.CRASHED
    assert "no heartbeat for 2 s" in reason
    crashed, reason = judge(finished)
    assert not crashed and "is Completed: left alone" in reason
    assert state_of(finished) is StateType.COMPLETED
    crashed, reason = judge(running)  # asked again: it is Crashed now, nothing more to do
    assert not crashed and state_of(running) is StateType.CRASHED


def test_a_run_that_sent_a_heartbeat_is_alive(settings: Settings) -> None:
    running = new_run("running")
    heartbeat(running)
    eventually(lambda: heard(running), timeout=15, what="the heartbeat stored by Prefect")
    crashed, reason = judge(running, quiet=timedelta(minutes=1))
    assert not crashed and "sent a heartbeat" in reason and "alive" in reason
    assert state_of(running) is StateType.RUNNING


def test_shipline_web_judges_what_the_automation_suspects(settings: Settings) -> None:
    running, finished = new_run("running"), new_run("completed")
    url = f"{settings.web_url}/hooks/prefect/unresponsive"
    with httpx.Client(trust_env=False, timeout=30) as client:
        left = client.post(url, json={"flow_run": f"prefect.flow-run.{finished}"})
        assert left.status_code == 200 and left.json()["crashed"] is False, left.text
        bad = client.post(url, json={"flow_run": "nonsense"})
        assert bad.status_code == 400 and "names no flow run" in bad.text
        # The running one sent nothing, but not yet for 90 s: alive for now.
        young = client.post(url, json={"flow_run": f"prefect.flow-run.{running}"})
        assert young.status_code == 200, young.text
    assert state_of(finished) is StateType.COMPLETED


def test_the_automation_calls_shipline_web_rather_than_changing_states_itself(settings: Settings) -> None:
    from prefect.blocks.webhook import Webhook

    with get_client(sync_client=True) as client:
        (automation,) = client.read_automations_by_name(CRASH_UNRESPONSIVE_RUNS)
    (action,) = automation.actions
    assert isinstance(action, CallWebhook)
    assert "{{ event.resource.id }}" in action.payload
    hook = Webhook.load(UNRESPONSIVE_WEBHOOK)
    assert isinstance(hook, Webhook)
    assert hook.url.get_secret_value() == f"{settings.web_url}/hooks/prefect/unresponsive"
