"""Prefect API latency with 100 flow runs in flight (``python -m bench prefect_api``), on the running stack's
Prefect — SQLite or PostgreSQL, whichever ``SHIPLINE_PREFECT_DATABASE`` gave it.

The runs in flight are made through the API, not as 100 processes (two cores could not run them): 100 runs
of a flow of the bench's own are created Running, and each then sends what a run's process sends — a batch
of 5 log lines every 5 s (Prefect batches a run's logs every 2 s; a run logs now and then, not in every
batch) and a heartbeat event every 30 s (the stack's ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``), staggered —
while the stack's three workers poll as usual. Under that load one client, one call at a time, measures
the calls a UI, CLI or worker makes: read a run, filter the runs in flight, write a batch of logs, create
a run (Pending) and set its state (Running, then Completed).

Figures: p50/p99 of each call (a 503 is tried again with Prefect's client's backoff, 2 s then doubling,
and the wait counts), the 503s the measured calls met and the calls that failed even so, the load's own
requests and its non-2xx answers (not tried again), and the "database is locked" lines the server logged
meanwhile (Prefect's SQLite refusing a write; none can come from PostgreSQL). Everything the bench made
is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from shipline.config import Settings
from shipline.prefect_auth import prefect_auth

IN_FLIGHT = 100
LOG_SECONDS = 5.0
LOG_LINES = 5
HEARTBEAT_SECONDS = 30.0
WARM_UP_SECONDS = 10.0
MEASURE_SECONDS = 60.0
PAUSE_SECONDS = 0.05
"""Between two measured calls: the measuring client is one user, not a load of its own."""
LOCKED = "database is locked"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _logs(run: str, count: int, text: str) -> list[dict[str, Any]]:
    return [
        {"name": "bench", "level": 20, "message": f"{text} {i}", "timestamp": _now(), "flow_run_id": run}
        for i in range(count)
    ]


def _heartbeat(run: str) -> list[dict[str, Any]]:
    return [
        {
            "id": str(uuid.uuid4()),
            "occurred": _now(),
            "event": "prefect.flow-run.heartbeat",
            "resource": {"prefect.resource.id": f"prefect.flow-run.{run}"},
        }
    ]


class Tally:
    """Requests of the load and the answers that were not 2xx (or no answer)."""

    def __init__(self) -> None:
        self.sent = 0
        self.failed = 0

    async def call(self, request: Awaitable[httpx.Response]) -> None:
        self.sent += 1
        try:
            response = await request
        except httpx.HTTPError:
            self.failed += 1
            return
        if not response.is_success:
            self.failed += 1


async def _run_in_flight(
    client: httpx.AsyncClient, run: str, offset: float, stop: asyncio.Event, tally: Tally
) -> None:
    """What one flow run's process sends while it runs: logs every 5 s, a heartbeat every 30 s."""
    await asyncio.sleep(offset)
    next_heartbeat = time.monotonic()
    while not stop.is_set():
        await tally.call(client.post("/logs/", json=_logs(run, LOG_LINES, "working")))
        if time.monotonic() >= next_heartbeat:
            await tally.call(client.post("/events", json=_heartbeat(run)))
            next_heartbeat += HEARTBEAT_SECONDS
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=LOG_SECONDS)


RETRIED: list[int] = [0]
"""503s the measured calls met and tried again (SQLite's "database is locked", as a client sees it)."""
FAILED: list[int] = [0]
"""Measured calls that still failed after Prefect's client would have given up."""


async def _send(client: httpx.AsyncClient, method: str, url: str, body: Any = None) -> httpx.Response:
    """One call as Prefect's client makes it: a 503 is tried again 2, 4, 8, 16 and 32 s later."""
    for attempt in range(6):
        response = await client.request(method, url, json=body)
        if response.status_code != 503 or attempt == 5:
            break
        RETRIED[0] += 1
        await asyncio.sleep(2 ** (attempt + 1))
    if not response.is_success:
        FAILED[0] += 1
    return response


async def _timed(samples: list[float], request: Awaitable[httpx.Response]) -> httpx.Response:
    """The call's latency as its caller sees it, retries included."""
    started = time.perf_counter()
    response = await request
    samples.append(time.perf_counter() - started)
    return response


async def _new_run(client: httpx.AsyncClient, flow: str, state: str) -> str:
    response = await _send(client, "POST", "/flow_runs/", {"flow_id": flow, "state": {"type": state}})
    response.raise_for_status()
    return str(response.json()["id"])


async def _measure(client: httpx.AsyncClient, flow: str, runs: list[str]) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {
        name: [] for name in ("read", "filter", "write_logs", "create_run", "set_state")
    }
    running = {"flow_runs": {"state": {"type": {"any_": ["RUNNING"]}}}, "limit": 200}
    calls: list[Callable[[int], Awaitable[Any]]] = [
        lambda i: _timed(samples["read"], _send(client, "GET", f"/flow_runs/{runs[i % len(runs)]}")),
        lambda i: _timed(samples["filter"], _send(client, "POST", "/flow_runs/filter", running)),
        lambda i: _timed(
            samples["write_logs"], _send(client, "POST", "/logs/", _logs(runs[0], 10, "measured"))
        ),
    ]
    deadline = time.monotonic() + MEASURE_SECONDS
    i = 0
    while time.monotonic() < deadline:
        for call in calls:
            await call(i)
            await asyncio.sleep(PAUSE_SECONDS)
        pending = {"flow_id": flow, "state": {"type": "PENDING"}}
        created = await _timed(samples["create_run"], _send(client, "POST", "/flow_runs/", pending))
        if not created.is_success:
            continue  # counted in FAILED; its states are not measured
        run = str(created.json()["id"])
        for state in ("RUNNING", "COMPLETED"):
            url = f"/flow_runs/{run}/set_state"
            await _timed(samples["set_state"], _send(client, "POST", url, {"state": {"type": state}}))
            await asyncio.sleep(PAUSE_SECONDS)
        i += 1
    return samples


def _locked_lines(settings: Settings, since: int) -> int:
    with (settings.log_dir / "prefect.log").open("rb") as log:
        log.seek(since)
        return log.read().decode(errors="replace").count(LOCKED)


async def _bench(settings: Settings) -> dict[str, float]:
    log = settings.log_dir / "prefect.log"
    log_offset = log.stat().st_size if log.exists() else 0
    limits = httpx.Limits(max_connections=50)
    async with (
        httpx.AsyncClient(
            base_url=settings.prefect_api_url,
            auth=prefect_auth(settings),
            timeout=60,
            limits=limits,
            trust_env=False,
        ) as load,
        httpx.AsyncClient(
            base_url=settings.prefect_api_url, auth=prefect_auth(settings), timeout=60, trust_env=False
        ) as measuring,
    ):
        name = f"bench-prefect-api-{uuid.uuid4().hex[:8]}"
        created = (await _send(load, "POST", "/flows/", {"name": name})).raise_for_status()
        flow = str(created.json()["id"])
        try:
            runs = [await _new_run(load, flow, "RUNNING") for _ in range(IN_FLIGHT)]
            stop, tally = asyncio.Event(), Tally()
            senders = [
                asyncio.create_task(_run_in_flight(load, run, i * LOG_SECONDS / IN_FLIGHT, stop, tally))
                for i, run in enumerate(runs)
            ]
            await asyncio.sleep(WARM_UP_SECONDS)
            started = time.monotonic()
            try:
                samples = await _measure(measuring, flow, runs)
            finally:
                stop.set()
                await asyncio.gather(*senders)
            elapsed = time.monotonic() - started
        finally:
            await _send(load, "DELETE", f"/flows/{flow}")  # its runs, their logs and states go with it
    figures: dict[str, float] = {"in_flight_runs": float(IN_FLIGHT), "measured_s": elapsed}
    for name, values in samples.items():
        ordered = sorted(values)
        figures[f"{name}_calls"] = float(len(ordered))
        figures[f"{name}_p50_ms"] = 1000 * statistics.median(ordered)
        figures[f"{name}_p99_ms"] = 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    figures["load_requests"] = float(tally.sent)
    figures["load_requests_per_s"] = tally.sent / (elapsed + WARM_UP_SECONDS)
    figures["load_failed"] = float(tally.failed)
    figures["measured_retried_503"] = float(RETRIED[0])
    figures["measured_failed"] = float(FAILED[0])
    figures["database_is_locked_lines"] = float(_locked_lines(settings, log_offset))
    return figures


def run(settings: Settings) -> dict[str, float | str]:
    """Measure, print nothing: ``python -m bench`` prints the figures (ms, counts)."""
    return {"database": settings.prefect_database, **asyncio.run(_bench(settings))}
