"""Log maintenance while the logs agent writes: the embedded SQLite store, the agent on a thread following
hand-written json-file logs, and the maintenance tasks' own code on the test's thread.

Every line the container prints is stored exactly once; the old partitions go, the app that keeps fewer
days loses its older lines, the closed days are optimized, and the agent meets nothing worse than a busy
database it waits out.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import closing
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from prefect.logging import disable_run_logger

from shipline.config import load_settings
from shipline.logs.agent import Agent
from shipline.logs.query import parse
from shipline.logs.records import LogRecord, Tags
from shipline.logs.sqlite import SqliteStore
from shipline.logs.store import LogStore, SearchRequest, day_of
from tasks.logs import (
    RetentionPolicy,
    delete_app_lines,
    drop_log_partition,
    optimize_log_partition,
    plan_log_maintenance,
)
from tests.logs_files import FileContainers
from tests.waiting import eventually

OLD_LINES = 3000
LIVE_LINES = 6000


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A SHIPLINE_HOME of the test: the tasks open the store under it, as they do under the stack's."""
    monkeypatch.setenv("SHIPLINE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def seed(store: LogStore, day: date, app: str, count: int) -> None:
    """``count`` lines of ``app`` at noon of ``day``, written as the agent would write them."""
    moment = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)
    tags = Tags(app=app, env="prod", release="1", port=20001, container="old", host="h1")
    for start in range(0, count, 500):
        records = [
            LogRecord(
                source=f"seed-{app}-{day}",
                offset=i,
                time=moment + timedelta(milliseconds=i),
                stream="stdout",
                message=f"{app} {day} line {i} 订单 {'z' * (i % 200)}",
                tags=tags,
            )
            for i in range(start, min(start + 500, count))
        ]
        store.write(records, [])


def run_maintenance(policy: RetentionPolicy, app_days: dict[str, int]) -> dict[str, list[date]]:
    """One maintenance run, step by step as the flow calls its tasks (their own code, outside Prefect)."""
    plan = plan_log_maintenance.fn(policy, app_days)
    for day in plan.drops:
        drop_log_partition.fn(day)
    for retention in plan.app_retentions:
        delete_app_lines.fn(retention)
    for day in plan.optimizations:
        optimize_log_partition.fn(day)
    return {"dropped": plan.drops, "optimized": plan.optimizations}


def test_maintenance_while_the_agent_writes_loses_and_repeats_no_line(
    home: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    today = day_of(datetime.now(UTC))
    ago = {n: today - timedelta(days=n) for n in (40, 20, 15, 6, 2)}
    path = load_settings().log_store_dir / "logs.db"
    with SqliteStore(path) as seeding:
        for day in ago.values():
            seed(seeding, day, "shop", OLD_LINES)
            seed(seeding, day, "blog", OLD_LINES // 3)
    assert path.is_relative_to(home)

    hosts = FileContainers(tmp_path / "containers")
    log = hosts.add("live1", app="live")
    # A short busy timeout: the agent meets the maintenance's transactions and must wait them out itself.
    agent_store = SqliteStore(path, busy_seconds=0.2)
    agent = Agent(
        agent_store, hosts, poll_seconds=0.01, read_bytes=4096, batch_bytes=16384, rescan_seconds=0.2
    )
    stop = threading.Event()
    expected = [f"live {i} 数据 {'x' * (i % 300)}" for i in range(LIVE_LINES)]

    def write_steadily() -> None:
        for start in range(0, LIVE_LINES, 40):
            log.print(*expected[start : start + 40])
            if start == LIVE_LINES // 2:
                log.rotate()
            time.sleep(0.005)

    runs: list[dict[str, list[date]]] = []
    with caplog.at_level(logging.WARNING, logger="shipline.logs.agent"):
        following = threading.Thread(target=agent.run, args=(stop,), name="agent")
        writer = threading.Thread(target=write_steadily, name="container")
        following.start()
        writer.start()
        with disable_run_logger():
            while writer.is_alive() or not runs:
                runs.append(run_maintenance(RetentionPolicy(retention_days=14, optimize=True), {"shop": 3}))
        writer.join()
        try:
            eventually(
                lambda: agent_store.count(app="live") >= LIVE_LINES,
                timeout=60,
                what=f"{LIVE_LINES} live lines in the store",
            )
        finally:
            stop.set()
            following.join(timeout=30)
        agent_store.close()
    assert not following.is_alive(), "the agent did not stop"

    with closing(SqliteStore(path)) as store:
        live = [hit.record.message for hit in store.after(0, app="live", limit=10 * LIVE_LINES)]
        assert len(live) == LIVE_LINES, f"{len(live)} live lines stored, {LIVE_LINES} printed"
        # Each once and intact (a rotation lets the two files' lines interleave in ingest order).
        assert sorted(live) == sorted(expected)
        by_day = {p.day: p for p in store.partitions()}
        assert ago[40] not in by_day and ago[20] not in by_day and ago[15] not in by_day
        assert store.count(app="shop") == OLD_LINES  # the 2-day-old ones; those of 6 days are past its 3
        assert store.count(app="blog") == 2 * (OLD_LINES // 3)  # kept 14 days: the 6- and 2-day-old ones
        assert by_day[ago[6]].lines == OLD_LINES // 3 and by_day[ago[2]].lines == OLD_LINES + OLD_LINES // 3
        assert by_day[today].lines == LIVE_LINES
        for day in (ago[6], ago[2]):  # the optimized indexes still match their lines, deletions included
            table = f"fts_{day.strftime('%Y%m%d')}"
            store.db.execute(f"INSERT INTO {table}({table}) VALUES ('integrity-check')")  # noqa: S608
        found = store.search(SearchRequest(parse("订单"), limit=10 * OLD_LINES))
        assert {h.record.tags.app for h in found if day_of(h.record.time) == ago[6]} == {"blog"}
    assert len(runs) >= 2, "maintenance did not run while the container was printing"
    assert runs[0]["dropped"] == [ago[40], ago[20], ago[15]]
    assert runs[0]["optimized"] == [ago[6], ago[2]]
    assert all(run["dropped"] == [] for run in runs[1:])

    refusals = [r.getMessage() for r in caplog.records if r.name == "shipline.logs.agent"]
    assert all("locked" in m or "busy" in m for m in refusals), refusals
    assert agent.stats.store_errors == 0 or agent.stats.last_error == ""
    assert agent.stats.lines == LIVE_LINES
