"""Ten deliveries of ten different apps started at once, commit -> PROD each: wall time, failures, and
how the flow runs spread over the work pools' workers (runs per pool, most running at one moment)."""

from __future__ import annotations

import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime

from bench.pipeline import _snapshot, retire_apps
from shipline.config import Settings
from shipline.delivery import RunReport, follow_delivery

APPS = 10


def _peak(intervals: list[tuple[float, float]]) -> int:
    """The most intervals that overlap at one moment."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def run(settings: Settings) -> dict[str, float | int | str]:
    """Start APPS deliveries at once; wait for all; report wall time, failures and the spread per pool."""
    stamp = int(time.time())
    reports: dict[str, RunReport] = {}
    seconds: dict[str, float] = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as scratch:
        sources = {
            f"benchmany-{stamp}-{i}": _snapshot(f"benchmany-{stamp}-{i}", Path(scratch), settings, "many")
            for i in range(APPS)
        }
        # Build the base layers first (not timed): the first delivery of a stack builds them once.
        warm = follow_delivery(
            next(iter(sources.values())), ref=None, environments=[], quiet=True, echo=print
        )
        assert warm.state == "Completed", warm

        def deliver(app: str, source: str) -> None:
            began = time.monotonic()
            try:
                reports[app] = follow_delivery(source, ref=None, environments=None, quiet=True, echo=print)
            except Exception as exc:  # counted as a failure and shown
                errors[app] = f"{type(exc).__name__}: {exc}"
            seconds[app] = time.monotonic() - began

        since = time.time()
        started = time.monotonic()
        threads = [threading.Thread(target=deliver, args=item) for item in sources.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.monotonic() - started
        retire_apps(list(sources))
    failed = sorted([app for app, report in reports.items() if report.state != "Completed"] + list(errors))
    per_pool: dict[str, list[tuple[float, float]]] = {}
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                start_time=FlowRunFilterStartTime(after_=datetime.fromtimestamp(since, UTC))
            ),
            limit=200,
        )
    for flow_run in runs:
        if flow_run.start_time is None or flow_run.end_time is None or not flow_run.work_pool_name:
            continue
        per_pool.setdefault(flow_run.work_pool_name, []).append(
            (flow_run.start_time.timestamp(), flow_run.end_time.timestamp())
        )
    figures: dict[str, float | int | str] = {
        "deliveries": APPS,
        "wall_seconds": wall,
        "slowest_delivery_seconds": max(seconds.values()),
        "fastest_delivery_seconds": min(seconds.values()),
        "failed": len(failed),
    }
    for pool, intervals in sorted(per_pool.items()):
        figures[f"pool_{pool}"] = f"{len(intervals)} runs, at most {_peak(intervals)} at once"
    for app in failed:
        report = reports.get(app)
        figures[f"failure_{app}"] = (
            errors.get(app) or f"{report.state if report else '?'}: {report.message if report else ''}"
        )
    return figures
