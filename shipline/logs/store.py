"""The small interface every log store implements, and how to open the configured one.

A store keeps records in one partition per day (the "index" that maintenance drops and optimizes) and the
agent's checkpoints beside them: ``write`` commits a batch and the checkpoints that cover it in one
transaction, so after any crash the store holds exactly the lines before each checkpoint.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from types import TracebackType
from typing import Literal

from shipline.errors import ConfigError, ShiplineError
from shipline.logs.query import Node
from shipline.logs.records import Checkpoint, LogRecord, StoredRecord

StoreKind = Literal["sqlite", "postgresql"]
Tokenizer = Literal["trigram", "unicode61"]
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000


class LogStoreError(ShiplineError):
    """The log store refused or could not take a read or a write (locked, full, down)."""


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """What to look for: a parsed query, tags that must match exactly, a time window, how many."""

    query: Node
    app: str | None = None
    env: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = DEFAULT_LIMIT


@dataclass(frozen=True, slots=True)
class Partition:
    """One day of records: its line count and message bytes."""

    day: date
    lines: int
    bytes: int


class LogStore(ABC):
    """A full-text store of log records with the agent's checkpoints."""

    kind: StoreKind

    @abstractmethod
    def checkpoints(self) -> dict[str, Checkpoint]:
        """Every committed checkpoint, by source."""

    @abstractmethod
    def forget_checkpoints(self, sources: Sequence[str]) -> None:
        """Drop the checkpoints of files that are gone (their container was removed)."""

    @abstractmethod
    def write(self, records: Sequence[LogRecord], checkpoints: Sequence[Checkpoint]) -> None:
        """Store ``records`` and move ``checkpoints`` forward, all or nothing.

        Raises:
            LogStoreError: nothing was written (the caller keeps the batch and tries again).
        """

    @abstractmethod
    def search(self, request: SearchRequest) -> list[StoredRecord]:
        """Matching records, newest first."""

    @abstractmethod
    def after(
        self, seq: int, *, app: str | None = None, env: str | None = None, limit: int = DEFAULT_LIMIT
    ) -> list[StoredRecord]:
        """Records stored after ``seq`` (oldest first): what ``tail`` prints next."""

    @abstractmethod
    def last_seq(self) -> int:
        """The ``seq`` of the newest stored record (0 when empty)."""

    @abstractmethod
    def count(self, *, app: str | None = None, env: str | None = None) -> int:
        """How many records are stored (for an app and environment)."""

    @abstractmethod
    def partitions(self) -> list[Partition]:
        """Every day that holds records, oldest first."""

    @abstractmethod
    def drop_partition(self, day: date) -> None:
        """Remove a day of records, as one step."""

    @abstractmethod
    def delete_before(self, app: str, before: datetime) -> int:
        """Remove an app's records older than ``before`` (its own retention); returns how many."""

    @abstractmethod
    def optimize_partition(self, day: date) -> str:
        """Compact a closed day's index; returns what was done, in a few words."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection."""

    def __enter__(self) -> LogStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def day_of(moment: datetime) -> date:
    """The partition a moment belongs to (UTC days)."""
    return moment.astimezone(UTC).date()


_DURATION = re.compile(r"^(\d+)\s*(s|m|h|d|w)$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_moment(text: str, *, now: datetime | None = None) -> datetime:
    """``--since``/``--until``: a duration back from now (``90s``, ``15m``, ``1h``, ``2d``, ``1w``) or an
    ISO 8601 time (UTC unless it says otherwise).

    Raises:
        ConfigError: for anything else.
    """
    now = now or datetime.now(UTC)
    value = text.strip()
    match = _DURATION.match(value)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{text!r} is neither a duration nor a time",
            hint="give a duration such as 30s, 15m, 1h, 2d, 1w, or a time such as 2026-11-25T14:00:00Z",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
