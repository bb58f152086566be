"""What a log-maintenance run decides: drops past retention (UTC days, never today), per-app deletions,
optimizations of closed days, the table it reports, and where an app's retention comes from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from shipline.errors import ConfigError, ReleaseError
from shipline.logs.maintenance import (
    Action,
    AppRetention,
    plan_maintenance,
    report,
    retention_of,
)
from shipline.logs.store import Partition
from shipline.release.history import Release
from shipline.sizes import human_bytes

NOW = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
TODAY = NOW.date()


def days_ago(*ages: int) -> list[Partition]:
    return [
        Partition(day=TODAY - timedelta(days=age), lines=10 * (age + 1), bytes=100 * (age + 1))
        for age in ages
    ]


def actions(partitions: list[Partition], **options: object) -> dict[int, Action]:
    options = {"now": NOW, "retention_days": 14, "app_retention_days": {}, **options}
    plan = plan_maintenance(partitions, **options)  # type: ignore[arg-type]
    return {(TODAY - p.day).days: p.action for p in plan.partitions}


def test_partitions_older_than_the_retention_are_dropped_and_the_last_kept_day_stays() -> None:
    assert actions(days_ago(30, 15, 14, 13, 1, 0)) == {
        30: Action.DROP,
        15: Action.DROP,
        14: Action.OPTIMIZE,  # its newest line is 14 days old at midnight: younger than 14 days until then
        13: Action.OPTIMIZE,
        1: Action.OPTIMIZE,
        0: Action.KEEP_OPEN,
    }


def test_today_is_never_dropped_nor_optimized_even_with_one_day_of_retention() -> None:
    assert actions(days_ago(2, 1, 0), retention_days=1) == {
        2: Action.DROP,
        1: Action.OPTIMIZE,
        0: Action.KEEP_OPEN,
    }


def test_a_partition_of_a_later_day_is_kept_open() -> None:
    assert actions(days_ago(-1, 0)) == {-1: Action.KEEP_OPEN, 0: Action.KEEP_OPEN}


def test_days_are_utc_days_whatever_the_zone_of_now() -> None:
    # 01:00 on the 26th in UTC+5 is 20:00 on the 25th in UTC: today is the 25th.
    east = datetime(2026, 11, 26, 1, 0, tzinfo=timezone(timedelta(hours=5)))
    plan = plan_maintenance(days_ago(0, -1), now=east, retention_days=14, app_retention_days={})
    assert [(p.day, p.action) for p in plan.partitions] == [
        (TODAY, Action.KEEP_OPEN),
        (TODAY + timedelta(days=1), Action.KEEP_OPEN),
    ]


def test_optimizing_off_keeps_closed_days_as_they_are() -> None:
    assert actions(days_ago(20, 3, 0), optimize=False) == {
        20: Action.DROP,
        3: Action.KEEP,
        0: Action.KEEP_OPEN,
    }


def test_an_app_keeping_fewer_days_has_its_older_lines_deleted_and_a_longer_one_changes_nothing() -> None:
    plan = plan_maintenance(
        days_ago(20, 5, 0),
        now=NOW,
        retention_days=14,
        app_retention_days={"shop": 3, "audit": 90, "same": 14},
    )
    assert plan.app_retentions == [AppRetention(app="shop", days=3, before=NOW - timedelta(days=3))]
    assert plan.drops == [TODAY - timedelta(days=20)]  # the 90 days of "audit" keep nothing a drop removes
    assert plan.optimizations == [TODAY - timedelta(days=5)]


def test_an_app_retention_with_nothing_old_enough_to_delete_is_left_out() -> None:
    plan = plan_maintenance(days_ago(20, 1, 0), now=NOW, retention_days=14, app_retention_days={"shop": 3})
    assert plan.app_retentions == []  # the 20-day-old partition is dropped; nothing left before 3 days


def test_nothing_to_do() -> None:
    plan = plan_maintenance([], now=NOW, retention_days=14, app_retention_days={"shop": 3})
    assert (plan.partitions, plan.drops, plan.optimizations, plan.app_retentions) == ([], [], [], [])
    assert report(plan) == []
    assert actions(days_ago(0)) == {0: Action.KEEP_OPEN}


@pytest.mark.parametrize(("platform", "apps"), [(0, {}), (14, {"shop": 0}), (-3, {})])
def test_a_retention_under_one_day_is_refused(platform: int, apps: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match="at least 1 day"):
        plan_maintenance(days_ago(0), now=NOW, retention_days=platform, app_retention_days=apps)


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ConfigError, match="aware"):
        plan_maintenance([], now=datetime(2026, 11, 25), retention_days=14, app_retention_days={})


def test_the_report_names_each_partition_and_what_was_done() -> None:
    plan = plan_maintenance(
        days_ago(20, 16, 5, 4, 0), now=NOW, retention_days=14, app_retention_days={"shop": 3}
    )
    five, four = TODAY - timedelta(days=5), TODAY - timedelta(days=4)
    after = [Partition(day=five, lines=60 - 25, bytes=1), Partition(day=four, lines=50, bytes=1)]
    rows = report(
        plan,
        failed={TODAY - timedelta(days=16): "SQLite log store: could not drop: database is locked"},
        optimized={five: "fts5 optimize", four: "fts5 optimize"},
        after_deletes=after,
    )
    assert [(row.partition, row.lines, row.bytes, row.action) for row in rows] == [
        (TODAY - timedelta(days=20), 210, 2100, "dropped (older than 14 days)"),
        (
            TODAY - timedelta(days=16),
            170,
            1700,
            "drop failed: SQLite log store: could not drop: database is locked",
        ),
        (five, 60, 600, "optimized: fts5 optimize; 25 lines deleted (per-app retention)"),
        (four, 50, 500, "optimized: fts5 optimize"),
        (TODAY, 10, 100, "kept (open)"),
    ]
    assert rows[0].size == "2.1 KiB"


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1536, 5 * 2**20, 3 * 2**40, 2**60)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "5.0 MiB",
        "3.0 TiB",
        "1048576.0 TiB",
    ]


def release(app: str, env: str, number: int, service: dict[str, object] | None) -> Release:
    request = {} if service is None else {"service": service}
    return Release(
        app=app, env=env, image=f"127.0.0.1:5000/apps/{app}", digest="sha256:" + "a" * 64, sha="b" * 40,
        number=number, request=request,
    )  # fmt: skip


def test_an_app_retention_is_the_longest_of_its_environments_newest_releases() -> None:
    releases = [
        release("shop", "pre", 7, {"log_retention_days": 3}),
        release("shop", "prod", 4, {"log_retention_days": 5}),
        release("blog", "pre", 2, {"log_retention_days": 2}),
        release("blog", "prod", 1, {"health_path": "/up"}),  # keeps the platform's retention in PROD
        release("wiki", "prod", 1, None),
        # A record of an earlier version, whose service section had another shape.
        release("dj", "pre", 1, {"replicas": 1, "command": [], "log_retention_days": 2}),
    ]
    assert retention_of(releases) == {"shop": 5, "dj": 2}


def test_an_invalid_service_section_names_the_release() -> None:
    with pytest.raises(ReleaseError, match="release 3 of shop in prod"):
        retention_of([release("shop", "prod", 3, {"log_retention_days": 0})])
