"""The log-maintenance deployment on the stack: scheduled nightly, and a run drops and optimizes the stack's
log partitions and tables what it did.

The partitions this test seeds belong to its own app and lie far in the past (older than any retention an
operator sets) or two days back (closed, kept and optimized), so the run takes nothing another test wrote.
"""

from __future__ import annotations

import json
from contextlib import closing
from datetime import UTC, date, datetime, timedelta
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

from blocks.logs import ShiplineLogs
from shipline.config import Settings
from shipline.flow_runs import run_deployment_and_wait
from shipline.logs.records import LogRecord, Tags
from shipline.logs.store import LogStore, day_of
from shipline.logs.stores import open_store

DEPLOYMENT = "log-maintenance/log-maintenance-nightly"


def seed(store: LogStore, app: str, day: date, count: int) -> None:
    moment = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=1)
    tags = Tags(app=app, env="prod", release="1", port=None, container="seeded", host="e2e")
    store.write(
        [
            LogRecord(
                source=f"e2e-{app}-{day}",
                offset=i,
                time=moment + timedelta(seconds=i),
                stream="stdout",
                message=f"{app} seeded line {i}",
                tags=tags,
            )
            for i in range(count)
        ],
        [],
    )


def test_the_deployment_runs_nightly_at_three_utc(settings: Settings) -> None:
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(DEPLOYMENT)
    assert deployment.work_pool_name == "ci"
    assert deployment.description and "retention" in deployment.description
    (schedule,) = deployment.schedules
    assert schedule.active
    assert schedule.schedule.model_dump(include={"cron", "timezone"}) == {
        "cron": "0 3 * * *",
        "timezone": "UTC",
    }


def test_a_run_drops_old_partitions_optimizes_closed_ones_and_tables_them(
    settings: Settings, app: str
) -> None:
    retention = ShiplineLogs.current().retention_days
    today = day_of(datetime.now(UTC))
    ancient = today - timedelta(days=retention + 400)
    recent = today - timedelta(days=2)
    with closing(open_store(settings)) as store:
        seed(store, app, ancient, 25)
        seed(store, app, recent, 10)

    run = run_deployment_and_wait(DEPLOYMENT, timeout=300)

    assert run.state is not None and run.state.is_completed(), f"{DEPLOYMENT}: {run.state}"
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["log-maintenance"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]),
            )
        )
    assert len(artifacts) == 1, f"run {run.id} published {len(artifacts)} log-maintenance artifacts"
    assert artifacts[0].description and f"retention {retention} days" in artifacts[0].description
    data = artifacts[0].data
    table: list[dict[str, Any]] = json.loads(data) if isinstance(data, str) else data  # type: ignore[assignment]
    rows = {row["partition"]: row for row in table}
    assert rows[ancient.isoformat()]["action"] == f"dropped (older than {retention} days)"
    assert rows[ancient.isoformat()]["lines"] >= 25
    assert rows[recent.isoformat()]["action"].startswith("optimized: ")
    if today.isoformat() in rows:  # something was logged today
        assert rows[today.isoformat()]["action"] == "kept (open)"
    with closing(open_store(settings)) as store:
        days = {p.day for p in store.partitions()}
        assert ancient not in days
        assert recent in days and store.count(app=app) == 10
