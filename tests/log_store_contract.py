"""What every log store must do, whatever its engine: the tests of each store import these.

A test module binds the ``store`` fixture (a fresh, empty store) and re-exports the ``test_*`` functions
below, so SQLite and PostgreSQL are held to one contract.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shipline.logs.query import parse
from shipline.logs.records import Checkpoint, LogRecord, Tags
from shipline.logs.store import LogStore, SearchRequest

NOW = datetime.now(UTC).replace(microsecond=0)
WEB = Tags(app="web", env="pre", release="7", port=20001, container="c-web", host="h1")
API = Tags(app="api", env="prod", release="3", port=20002, container="c-api", host="h1")

MESSAGES = [
    (WEB, "GET /api/v1/users 200 in 12ms"),
    (WEB, "连接数据库失败: 超时 (db=orders)"),
    (API, "ERROR timeout talking to payments"),
    (API, "WARN slow query took 900ms"),
    (WEB, 'user said "hello world" twice'),
    (API, "ok"),
]


def records(
    messages: list[tuple[Tags, str]] = MESSAGES, *, source: str = "f1", start: datetime = NOW
) -> list[LogRecord]:
    return [
        LogRecord(
            source=source,
            offset=index * 100,
            time=start + timedelta(milliseconds=index),
            stream="stdout" if index % 2 == 0 else "stderr",
            message=message,
            tags=tags,
            fields={"level": "info", "n": index} if index == 0 else {},
            flags=frozenset({"truncated"}) if index == 1 else frozenset(),
        )
        for index, (tags, message) in enumerate(messages)
    ]


def found(store: LogStore, query: str, **filters: object) -> list[str]:
    return [hit.record.message for hit in store.search(SearchRequest(parse(query), **filters))]  # type: ignore[arg-type]


def test_a_written_batch_is_found_with_its_tags_and_fields(store: LogStore) -> None:
    store.write(records(), [Checkpoint(source="f1", path="/x", container="c-web", offset=600)])
    [hit] = store.search(SearchRequest(parse("/api/v1")))
    assert hit.record.tags == WEB
    assert hit.record.fields == {"level": "info", "n": 0}
    assert hit.record.time == NOW
    assert hit.record.stream == "stdout"
    [flagged] = store.search(SearchRequest(parse("数据库")))
    assert flagged.record.flags == {"truncated"}
    assert store.checkpoints()["f1"].offset == 600
    assert store.count() == len(MESSAGES)
    assert store.count(app="api") == 3


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("timeout", ["ERROR timeout talking to payments"]),
        ("TIMEOUT", ["ERROR timeout talking to payments"]),
        ("数据库连接", []),
        ("数据库", ["连接数据库失败: 超时 (db=orders)"]),
        ("超时", ["连接数据库失败: 超时 (db=orders)"]),
        ('"hello world"', ['user said "hello world" twice']),
        ('"world hello"', []),
        ("slow OR payments", ["WARN slow query took 900ms", "ERROR timeout talking to payments"]),
        ("ms -slow", ["GET /api/v1/users 200 in 12ms"]),
        ("ms AND NOT slow", ["GET /api/v1/users 200 in 12ms"]),
        ("(slow OR ok) -query", ["ok"]),
        ("ok", ["ok", "WARN slow query took 900ms"]),  # two letters: a substring, as everywhere
    ],
)
def test_search_language(store: LogStore, query: str, expected: list[str]) -> None:
    store.write(records(), [])
    assert found(store, query) == expected


def test_filters_by_app_env_and_time(store: LogStore) -> None:
    store.write(records(), [])
    assert found(store, "ms", app="web") == ["GET /api/v1/users 200 in 12ms"]
    assert found(store, "ms", app="api", env="prod") == ["WARN slow query took 900ms"]
    assert found(store, "ms", app="api", env="pre") == []
    assert found(store, "ms", since=NOW + timedelta(milliseconds=1)) == ["WARN slow query took 900ms"]
    assert found(store, "ms", until=NOW) == ["GET /api/v1/users 200 in 12ms"]


def test_newest_first_and_limit(store: LogStore) -> None:
    store.write(records([(WEB, f"line {i}") for i in range(50)]), [])
    assert found(store, "line", limit=3) == ["line 49", "line 48", "line 47"]


def test_a_failed_write_stores_nothing_and_keeps_the_checkpoint(store: LogStore) -> None:
    store.write(records()[:2], [Checkpoint(source="f1", path="/x", container="c", offset=200)])
    bad = records()[2:]
    bad.append(LogRecord(source="f1", offset=900, time=NOW, stream="stdout", message="x", tags=None))  # type: ignore[arg-type]
    with pytest.raises(Exception):  # noqa: B017 - any failure; what matters is that nothing was written
        store.write(bad, [Checkpoint(source="f1", path="/x", container="c", offset=900)])
    assert store.count() == 2
    assert store.checkpoints()["f1"].offset == 200


def test_after_returns_what_was_stored_since_in_order(store: LogStore) -> None:
    store.write(records()[:2], [])
    mark = store.last_seq()
    store.write(records()[2:], [])
    later = store.after(mark)
    assert [h.record.message for h in later] == [m for _, m in MESSAGES[2:]]
    assert [h.record.message for h in store.after(mark, app="api", env="prod")] == [
        m for t, m in MESSAGES[2:] if t is API
    ]
    assert store.after(store.last_seq()) == []


def test_partitions_per_day_drop_and_optimize(store: LogStore) -> None:
    old = NOW - timedelta(days=3)
    store.write(records(source="old", start=old), [])
    store.write(records(), [])
    days = {p.day: p for p in store.partitions()}
    assert set(days) == {old.date(), NOW.date()}
    assert days[old.date()].lines == len(MESSAGES)
    assert days[old.date()].bytes == sum(len(m.encode()) for _, m in MESSAGES)
    assert store.optimize_partition(old.date())
    assert found(store, "payments") == ["ERROR timeout talking to payments"] * 2
    store.drop_partition(old.date())
    assert [p.day for p in store.partitions()] == [NOW.date()]
    assert found(store, "payments") == ["ERROR timeout talking to payments"]


def test_delete_before_removes_only_that_apps_old_lines(store: LogStore) -> None:
    store.write(records(source="old", start=NOW - timedelta(days=2)), [])
    store.write(records(), [])
    removed = store.delete_before("api", NOW - timedelta(days=1))
    assert removed == 3
    assert store.count(app="api") == 3
    assert store.count(app="web") == 6
    assert found(store, "payments") == ["ERROR timeout talking to payments"]
    assert sum(p.lines for p in store.partitions()) == 9
