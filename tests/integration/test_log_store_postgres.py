"""The PostgreSQL log store on the stack's server: the log-store contract, then what only PostgreSQL does
(partitions as tables, the trigram index, NUL bytes) and its faults (a failed transaction, a server that
does not answer, a connection that dies between calls).

Each test gets a database of its own, dropped afterwards, so tests never see each other's records.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from shipline.config import Settings
from shipline.logs.postgres import PostgresStore
from shipline.logs.query import parse
from shipline.logs.records import Checkpoint, LogRecord, Tags
from shipline.logs.store import LogStore, LogStoreError, SearchRequest
from tests.log_store_contract import *  # noqa: F403 - the contract's tests run here
from tests.log_store_contract import MESSAGES, NOW, WEB, found, records
from tests.postgres_db import admin as admin_connection
from tests.postgres_db import fresh_database


@pytest.fixture
def database(settings: Settings) -> Iterator[str]:
    """The connection string of a new empty database owned by the log store's role; dropped after."""
    yield from fresh_database(settings)


@pytest.fixture
def store(database: str) -> Iterator[LogStore]:
    with PostgresStore(database) as opened:
        yield opened


def _tables(settings: Settings, database: str) -> set[str]:
    dbname = psycopg.conninfo.conninfo_to_dict(database)["dbname"]
    with admin_connection(settings, str(dbname)) as admin:
        rows = admin.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'log\\_lines\\_%'")
        return {row[0] for row in rows.fetchall()}


def test_one_table_per_utc_day_created_with_the_batch_and_dropped_with_the_day(
    store: LogStore, settings: Settings, database: str
) -> None:
    old = NOW - timedelta(days=2)
    store.write(records(source="old", start=old), [])
    store.write(records(), [])
    names = {f"log_lines_{old:%Y%m%d}", f"log_lines_{NOW:%Y%m%d}"}
    assert _tables(settings, database) == names
    store.drop_partition(old.date())
    assert _tables(settings, database) == {f"log_lines_{NOW:%Y%m%d}"}
    assert store.count() == len(MESSAGES)


def test_a_transaction_the_server_rejects_leaves_nothing_not_even_the_new_day(
    store: LogStore, settings: Settings, database: str
) -> None:
    # The port does not fit PostgreSQL's integer: the server refuses the COPY after the day's table was made.
    bad = records()
    huge_port = Tags(app="web", env="pre", port=2**40)
    bad.append(LogRecord(source="f1", offset=900, time=NOW, stream="stdout", message="x", tags=huge_port))
    with pytest.raises(LogStoreError) as raised:
        store.write(bad, [Checkpoint(source="f1", path="/x", container="c", offset=900)])
    assert raised.value.transient is False
    assert store.count() == 0
    assert store.partitions() == []
    assert store.checkpoints() == {}
    assert _tables(settings, database) == set()
    store.write(records(), [])  # the store goes on after a refused batch
    assert store.count() == len(MESSAGES)


def test_nul_characters_are_stored_as_replacement_characters(store: LogStore) -> None:
    line = LogRecord(
        source="f1",
        offset=0,
        time=NOW,
        stream="stdout",
        message="bin\x00ary\x00",
        tags=WEB,
        fields={"msg": "a\x00b"},
        flags=frozenset({"binary"}),
    )
    store.write([line], [])
    [hit] = store.search(SearchRequest(parse("ary")))
    assert hit.record.message == "bin\ufffdary\ufffd"
    assert hit.record.fields == {"msg": "a\x00b"}  # JSON escapes it: the fields come back as they were
    assert hit.record.flags == {"binary"}
    assert store.partitions()[0].bytes == len("bin\ufffdary\ufffd".encode())


def test_like_wildcards_in_a_query_are_plain_characters(store: LogStore) -> None:
    store.write(records([(WEB, "disk 100% full"), (WEB, "disk 1000 full"), (WEB, "a_b"), (WEB, "axb")]), [])
    assert found(store, "100%") == ["disk 100% full"]
    assert found(store, "a_b") == ["a_b"]
    store.write(records([(WEB, "C:\\path\\x"), (WEB, "C:path")], source="f2"), [])
    assert found(store, "c:\\path") == ["C:\\path\\x"]


def test_terms_are_looked_up_in_the_trigram_index(store: LogStore, settings: Settings, database: str) -> None:
    store.write(records(), [])
    dbname = str(psycopg.conninfo.conninfo_to_dict(database)["dbname"])
    with admin_connection(settings, dbname) as admin:
        admin.execute("SET enable_seqscan = off")
        plan = admin.execute(
            "EXPLAIN SELECT seq FROM log_lines WHERE message ILIKE %s ORDER BY seq DESC LIMIT 10",
            ("%timeout%",),
        ).fetchall()
    text = "\n".join(row[0] for row in plan)
    assert "Bitmap Index Scan" in text and "message" in text, text


def test_an_unreachable_server_is_a_transient_error() -> None:
    with socket.socket() as probe:  # a loopback port that nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(LogStoreError) as raised:
        PostgresStore(f"postgresql://shipline@127.0.0.1:{port}/shipline_logs")
    assert raised.value.transient is True
    assert f"127.0.0.1:{port}/shipline_logs" in raised.value.message
    assert raised.value.hint


def test_the_store_reconnects_after_its_connection_is_killed(
    store: LogStore, settings: Settings, database: str
) -> None:
    store.write(records()[:2], [Checkpoint(source="f1", path="/x", container="c", offset=200)])
    dbname = str(psycopg.conninfo.conninfo_to_dict(database)["dbname"])
    with admin_connection(settings) as admin:
        killed = admin.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND application_name = 'shipline-logs'",
            (dbname,),
        ).fetchone()
    assert killed == (1,)
    store.write(records()[2:], [Checkpoint(source="f1", path="/x", container="c", offset=600)])
    assert store.count() == len(MESSAGES)
    assert store.checkpoints()["f1"].offset == 600
    assert found(store, "payments") == ["ERROR timeout talking to payments"]


def test_a_lost_server_fails_the_call_transiently_and_the_next_call_reconnects(
    store: LogStore, settings: Settings, database: str
) -> None:
    store.write(records()[:2], [])
    assert isinstance(store, PostgresStore)
    # Point the open store at a port where nothing listens, as if the server had gone away.
    live_url = store.url
    store.close()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store.url = make_conninfo(live_url, port=str(port))
    with pytest.raises(LogStoreError) as raised:
        store.write(records()[2:], [])
    assert raised.value.transient is True
    store.url = live_url  # the server is back
    store.write(records()[2:], [])
    assert store.count() == len(MESSAGES)
