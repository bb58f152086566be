"""The embedded SQLite store against the log-store contract, with both tokenizers where they agree."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shipline.logs.sqlite import SqliteStore
from shipline.logs.store import LogStore
from tests.log_store_contract import *  # noqa: F403 - the contract's tests run here
from tests.log_store_contract import NOW, WEB, found, records


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LogStore]:
    with SqliteStore(tmp_path / "logs.db") as opened:
        yield opened


def test_a_line_with_every_trigram_of_a_term_but_not_the_term_is_not_found(store: LogStore) -> None:
    # The trigram index keeps no positions: "abcd" narrows to lines holding "abc" and "bcd" anywhere.
    store.write(records([(WEB, "abc xbcd"), (WEB, "ABCD here"), (WEB, "bcd abc abcd")]), [])
    assert found(store, "abcd") == ["bcd abc abcd", "ABCD here"]
    assert found(store, '"abc x" OR zzabcd') == ["abc xbcd"]
    assert found(store, "abcd -here") == ["bcd abc abcd"]


def test_a_trigram_day_made_with_positions_is_still_searched(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "older.db")
    with store:
        day = NOW.strftime("%Y%m%d")
        # The day's tables as they were made before trigram days dropped their positions.
        store.db.execute(
            f"CREATE TABLE lines_{day}(seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, source TEXT NOT NULL, "
            "off INTEGER NOT NULL, stream TEXT NOT NULL, app TEXT NOT NULL, env TEXT NOT NULL, "
            "release TEXT NOT NULL, port INTEGER, container TEXT NOT NULL, host TEXT NOT NULL, "
            "fields TEXT NOT NULL, flags TEXT NOT NULL, message TEXT NOT NULL)"
        )
        store.db.execute(
            f"CREATE VIRTUAL TABLE fts_{day} USING fts5(message, content='lines_{day}', content_rowid='seq', "
            "tokenize='trigram')"
        )
        store.db.execute(
            "INSERT INTO partitions(day, tokenizer, lines, bytes) VALUES (?, 'trigram', 0, 0)", (day,)
        )
        store.write(records(), [])
        assert found(store, '"hello world"') == ['user said "hello world" twice']
        assert found(store, '"world hello"') == []
        assert found(store, "数据库") == ["连接数据库失败: 超时 (db=orders)"]
        assert found(store, "ms -slow", app="web") == ["GET /api/v1/users 200 in 12ms"]
