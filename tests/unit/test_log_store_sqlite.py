"""The embedded SQLite store against the log-store contract, with both tokenizers where they agree."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shipline.logs.sqlite import SqliteStore
from shipline.logs.store import LogStore
from tests.log_store_contract import *  # noqa: F403 - the contract's tests run here
from tests.log_store_contract import WEB, found, records


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
