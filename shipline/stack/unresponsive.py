"""Runs whose worker died: Prefect's automation suspects them, ``shipline web`` checks and crashes them.

A flow run sends a heartbeat event every ``HEARTBEAT_SECONDS``; a process worker that dies leaves its runs
``Running`` for ever (PrefectHQ/prefect#16746). The automation ``shipline-crash-unresponsive-runs`` that
``shipline up`` applies fires when a run's heartbeat is not followed by another one, or by a final state,
within ``UNRESPONSIVE_AFTER_SECONDS``. It cannot act on the run itself: Prefect's trigger service may take in
a short run's final state before that run's last heartbeat (the two come by different roads, the server's
own state event and the run's event stream), and then fires for a run that finished long ago — changing its
state fails, and Prefect logs "Action failed: … already in terminal state" for every such run. So the
automation calls ``POST /hooks/prefect/unresponsive`` on ``shipline web`` instead, and this module acts
only on what it checks itself: the run is still ``Running`` and Prefect holds no heartbeat of it for
``UNRESPONSIVE_AFTER_SECONDS``. Anyone may call the endpoint: it can only do what those facts justify.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas import OrchestrationResult
from prefect.client.schemas.objects import StateType
from prefect.exceptions import ObjectNotFound
from prefect.states import Crashed

from shipline.config import UNRESPONSIVE_AFTER_SECONDS

_RUN = re.compile(r"^(?:prefect\.flow-run\.)?([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$")


@dataclass(frozen=True)
class Outcome:
    """What was done with a suspected run, and why."""

    crashed: bool
    reason: str


def flow_run_id(text: str) -> UUID | None:
    """The run a payload names, as ``prefect.flow-run.<id>`` (the event's resource) or the bare id."""
    found = _RUN.match(text.strip().lower())
    return UUID(found[1]) if found else None


async def last_heartbeat(client: PrefectClient, run: UUID, *, since: datetime) -> datetime | None:
    """When the run's newest heartbeat event since ``since`` occurred (None: none since then)."""
    response = await client._client.post(
        "/events/filter",
        json={
            "filter": {
                "occurred": {"since": since.isoformat(), "until": datetime.now(UTC).isoformat()},
                "event": {"name": ["prefect.flow-run.heartbeat"]},
                "resource": {"id": [f"prefect.flow-run.{run}"]},
                "order": "DESC",
            },
            "limit": 1,
        },
    )
    response.raise_for_status()
    events = response.json().get("events") or []
    return datetime.fromisoformat(events[0]["occurred"]) if events else None


async def crash_if_unresponsive(
    client: PrefectClient, run: UUID, *, quiet: timedelta = timedelta(seconds=UNRESPONSIVE_AFTER_SECONDS)
) -> Outcome:
    """Mark ``run`` Crashed if it is still Running and sent no heartbeat for ``quiet``; else leave it.

    The state change is not forced: a run that reaches a final state meanwhile keeps it.
    """
    try:
        flow_run = await client.read_flow_run(run)
    except ObjectNotFound:
        return Outcome(False, f"no flow run {run}")
    state = flow_run.state
    if state is None or state.type is not StateType.RUNNING:
        return Outcome(False, f"flow run {run} is {state.name if state else 'without a state'}: left alone")
    now = datetime.now(UTC)
    heard = await last_heartbeat(client, run, since=now - quiet)
    if heard is not None:
        return Outcome(False, f"flow run {run} sent a heartbeat at {heard.isoformat()}: alive")
    seconds = int(quiet.total_seconds())
    result: OrchestrationResult[Any] = await client.set_flow_run_state(
        run, Crashed(message=f"no heartbeat for {seconds} s: the worker or its host died")
    )
    if result.status.value != "ACCEPT":
        return Outcome(False, f"flow run {run}: Prefect kept its state ({result.status.value})")
    return Outcome(True, f"flow run {run} marked Crashed: no heartbeat for {seconds} s")
