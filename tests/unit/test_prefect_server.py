"""The stack's Prefect server: on SQLite, every transaction begins IMMEDIATE (a writer waits its turn)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from prefect.server.database import configurations

from shipline.config import load_settings
from shipline.stack.components import PrefectServer
from shipline.stack.prefect_server import begin_sqlite_writes_immediately


class Session:
    """Records the SQLite begin mode in force when the transaction begins."""

    def __init__(self) -> None:
        self.modes: list[str | None] = []

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[str]:
        self.modes.append(configurations.SQLITE_BEGIN_MODE.get())
        yield "transaction"


@pytest.fixture
def patched() -> Iterator[None]:
    original = configurations.AioSqliteConfiguration.begin_transaction
    try:
        assert begin_sqlite_writes_immediately(), "Prefect's SQLite configuration is not as expected"
        yield
    finally:
        configurations.AioSqliteConfiguration.begin_transaction = original  # type: ignore[method-assign]


@pytest.mark.usefixtures("patched")
def test_every_sqlite_transaction_begins_immediate_even_when_prefect_asks_for_deferred() -> None:
    session = Session()
    configuration = configurations.AioSqliteConfiguration(connection_url="sqlite+aiosqlite:///:memory:")

    async def both() -> None:
        for with_for_update in (False, True):
            async with configuration.begin_transaction(session, with_for_update=with_for_update):  # type: ignore[arg-type]
                pass

    asyncio.run(both())
    assert session.modes == ["IMMEDIATE", "IMMEDIATE"]
    assert configurations.SQLITE_BEGIN_MODE.get() is None  # reset after each transaction


def test_the_stack_starts_prefect_through_it(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("SHIPLINE_HOME", str(tmp_path))
    command = PrefectServer(load_settings()).command()
    assert command[1:5] == ["-m", "shipline.stack.prefect_server", "server", "start"]
