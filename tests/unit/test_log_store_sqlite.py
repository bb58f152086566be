"""The embedded SQLite store against the log-store contract, with both tokenizers where they agree."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shipline.logs.sqlite import SqliteStore
from shipline.logs.store import LogStore
from tests.log_store_contract import *  # noqa: F403 - the contract's tests run here


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LogStore]:
    with SqliteStore(tmp_path / "logs.db") as opened:
        yield opened
