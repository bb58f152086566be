"""Opening the configured log store (``SHIPLINE_LOG_STORE``): the one place that knows both engines."""

from __future__ import annotations

from shipline.config import Settings
from shipline.logs.postgres import PostgresStore
from shipline.logs.sqlite import SqliteStore
from shipline.logs.store import LogStore


def open_store(settings: Settings, *, busy_seconds: float = 5.0) -> LogStore:
    """The log store the settings name: embedded SQLite under the home, or PostgreSQL.

    Raises:
        LogStoreError: the store cannot be reached.
    """
    if settings.log_store == "postgresql":
        return PostgresStore(settings.postgres_url)
    return SqliteStore(
        settings.log_store_dir / "logs.db", tokenizer=settings.log_tokenizer, busy_seconds=busy_seconds
    )
