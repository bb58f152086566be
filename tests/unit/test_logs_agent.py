"""The logs agent on hand-written json-file logs and a real SQLite store: every line once, whatever happens.

A "crash" here drops the agent between rounds without letting it finish (its open files and memory are
lost, as with ``kill -9``); the integration tests kill the real process mid-transaction as well.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipline.logs.agent import Agent
from shipline.logs.jsonfile import MAX_MESSAGE
from shipline.logs.query import parse
from shipline.logs.sqlite import SqliteStore
from shipline.logs.store import SearchRequest
from tests.logs_files import FileContainers

CHINESE = ["连接数据库失败", "订单已创建 id=42", "用户登录成功"]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "store" / "logs.db", busy_seconds=0.2)
    yield opened
    opened.close()


@pytest.fixture
def hosts(tmp_path: Path) -> FileContainers:
    return FileContainers(tmp_path / "containers")


def new_agent(store: SqliteStore, hosts: FileContainers, **options: object) -> Agent:
    agent = Agent(store, hosts, sleep=lambda seconds: None, rescan_seconds=0, **options)  # type: ignore[arg-type]
    agent.start()
    return agent


def drain(agent: Agent, rounds: int = 200) -> None:
    for _ in range(rounds):
        if agent.step() == 0 and agent.step() == 0:
            return
    raise AssertionError("the agent kept finding new lines")


def stored_messages(store: SqliteStore, app: str | None = None) -> list[str]:
    return [hit.record.message for hit in store.after(0, app=app, limit=1_000_000)]


def test_lines_are_stored_once_with_their_tags_fields_and_time(
    store: SqliteStore, hosts: FileContainers
) -> None:
    log = hosts.add("c1")
    log.print("plain text line", *CHINESE, '{"level": "warn", "msg": "disk at 91%"}')
    log.print("to stderr", stream="stderr")
    agent = new_agent(store, hosts)
    drain(agent)
    drain(agent)
    assert sorted(stored_messages(store)) == sorted(
        ["plain text line", *CHINESE, '{"level": "warn", "msg": "disk at 91%"}', "to stderr"]
    )
    [json_line] = store.search(SearchRequest(parse('"disk at 91%"')))
    assert json_line.record.fields == {"level": "warn", "msg": "disk at 91%"}
    assert json_line.record.tags.app == "shop" and json_line.record.tags.port == 20001
    [err] = store.search(SearchRequest(parse("stderr")))
    assert err.record.stream == "stderr"
    for phrase in CHINESE:
        assert [h.record.message for h in store.search(SearchRequest(parse(phrase)))] == [phrase]


def test_a_crash_between_rounds_neither_loses_nor_repeats_a_line(
    store: SqliteStore, hosts: FileContainers
) -> None:
    log = hosts.add("c1")
    expected = [f"line {i} 数据 {'x' * (i % 300)}" for i in range(3000)]
    log.print(*expected[:1500])
    agent = new_agent(store, hosts, read_bytes=4096, batch_bytes=16384)
    for _ in range(5):  # some batches committed, most not yet read
        agent.step()
    assert 0 < store.count() < 1500
    del agent  # killed: nothing flushed
    log.print(*expected[1500:])
    drain(new_agent(store, hosts, read_bytes=4096, batch_bytes=16384))
    assert stored_messages(store) == expected


def test_rotation_during_a_burst_and_a_restart_between_rotations(
    store: SqliteStore, hosts: FileContainers
) -> None:
    log = hosts.add("c1")
    expected = [f"burst {i}" for i in range(4000)]
    agent = new_agent(store, hosts, read_bytes=2048, batch_bytes=8192)
    for chunk in range(8):
        log.print(*expected[chunk * 500 : chunk * 500 + 250])
        agent.step()
        log.rotate()  # renamed while the agent holds it open, mid-read
        log.print(*expected[chunk * 500 + 250 : chunk * 500 + 500])
        agent.step()
        if chunk == 4:
            agent = new_agent(store, hosts, read_bytes=2048, batch_bytes=8192)  # crash and restart
    drain(agent)
    messages = stored_messages(store)
    assert len(messages) == len(expected)
    assert sorted(messages) == sorted(expected)


def test_an_inode_reused_by_a_new_file_is_read_from_its_start(
    store: SqliteStore, hosts: FileContainers
) -> None:
    log = hosts.add("c1")
    log.print("first file, line one", "first file, line two")
    drain(new_agent(store, hosts))
    content = log.path.read_bytes()
    log.path.write_bytes(b"")  # same inode, new content: not the file the checkpoint is of
    log.print("second file, line one")
    assert log.path.read_bytes() != content
    drain(new_agent(store, hosts))
    assert stored_messages(store)[-1] == "second file, line one"


def test_split_long_binary_and_malformed_lines_are_stored_and_flagged(
    store: SqliteStore, hosts: FileContainers
) -> None:
    log = hosts.add("c1")
    long_line = "L" * (40 * 1024)
    huge_line = "H" * (1024 * 1024)
    log.print("before", long_line, huge_line, "bell \x07 and nul \x00 here", "after")
    log.raw(b"this is not json\n")
    log.raw(b'{"log": 42}\n')
    log.raw(b"\xff\xfe binary junk\n")
    agent = new_agent(store, hosts)
    drain(agent)
    by_start = {hit.record.message[:6]: hit.record for hit in store.after(0)}
    assert by_start["before"].flags == frozenset()
    assert by_start["L" * 6].message == long_line and not by_start["L" * 6].flags
    assert len(by_start["H" * 6].message) == MAX_MESSAGE and by_start["H" * 6].flags == {"truncated"}
    assert by_start["bell \ufffd"[:6]].flags == {"binary"}
    assert by_start["this i"].flags == {"malformed"}
    assert "malformed" in by_start['{"log"'].flags
    assert {"malformed", "binary"} <= by_start["\ufffd\ufffd bin"].flags
    assert by_start["after"].flags == frozenset()
    assert store.count() == 8


def test_a_split_line_cut_by_a_stop_is_stored_as_partial(store: SqliteStore, hosts: FileContainers) -> None:
    log = hosts.add("c1")
    log.print("complete")
    log.raw(log.entry("no newline at the end"))
    agent = new_agent(store, hosts)
    drain(agent)
    assert stored_messages(store) == ["complete"]  # waiting for the rest of the line
    agent._events.put(("die", "c1"))
    drain(agent)
    [partial] = [h.record for h in store.after(0) if h.record.message == "no newline at the end"]
    assert partial.flags == {"partial"}


def test_the_store_refuses_then_takes_the_kept_batch(
    store: SqliteStore, hosts: FileContainers, tmp_path: Path
) -> None:
    log = hosts.add("c1")
    log.print(*(f"locked {i}" for i in range(100)))
    agent = new_agent(store, hosts)
    blocker = sqlite3.connect(tmp_path / "store" / "logs.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the database
    assert agent.step() == 0 and agent.step() == 0
    assert agent.stats.store_errors == 2 and "locked" in agent.stats.last_error
    log.print(*(f"locked {i}" for i in range(100, 200)))
    blocker.execute("ROLLBACK")
    drain(agent)
    assert stored_messages(store) == [f"locked {i}" for i in range(200)]


def test_a_full_disk_is_waited_out_without_loss(store: SqliteStore, hosts: FileContainers) -> None:
    log = hosts.add("c1")
    agent = new_agent(store, hosts)
    pages = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count = {pages + 2}")  # the disk fills up
    log.print(*(f"full {i} {'y' * 200}" for i in range(2000)))
    assert agent.step() == 0
    assert "full" in agent.stats.last_error
    store.db.execute("PRAGMA max_page_count = 1073741823")  # space freed
    drain(agent)
    assert stored_messages(store) == [f"full {i} {'y' * 200}" for i in range(2000)]


def test_a_flooding_container_does_not_starve_a_quiet_one(store: SqliteStore, hosts: FileContainers) -> None:
    flood = hosts.add("flood", app="noisy")
    quiet = hosts.add("quiet", app="calm", port=20002)
    flood.print(*("f" * 1000 for _ in range(20_000)))  # 20 MB waiting
    agent = new_agent(store, hosts, read_bytes=64 * 1024, batch_bytes=1024 * 1024)
    agent.step()
    quiet.print("quiet line")
    agent.step()
    assert stored_messages(store, app="calm") == ["quiet line"]
    assert store.count(app="noisy") < 20_000


def test_a_removed_container_is_read_to_its_end_and_forgotten(
    store: SqliteStore, hosts: FileContainers
) -> None:
    log = hosts.add("c1")
    log.print("one")
    agent = new_agent(store, hosts)
    drain(agent)
    log.print("two", "three")
    # Docker deletes the files on removal; the agent still holds them open and reads them to the end.
    hosts.remove("c1")
    agent._events.put(("destroy", "c1"))
    drain(agent)
    assert stored_messages(store) == ["one", "two", "three"]
    assert store.checkpoints() == {}
    assert agent.files == {}


def test_agents_of_two_hosts_on_one_store_keep_each_others_checkpoints(
    store: SqliteStore, tmp_path: Path
) -> None:
    pre, prod = FileContainers(tmp_path / "pre-engine"), FileContainers(tmp_path / "prod-engine")
    pre.add("a1", env="pre").print("pre one")
    prod.add("b1", env="prod").print("prod one")
    drain(new_agent(store, pre))
    drain(new_agent(store, prod))  # its start meets the PRE host's checkpoints: not its own, so kept
    assert len(store.checkpoints()) == 2
    pre.logs["a1"][0].print("pre two")
    drain(new_agent(store, pre))  # a restarted PRE agent resumes at its checkpoint
    assert sorted(stored_messages(store)) == ["pre one", "pre two", "prod one"]
