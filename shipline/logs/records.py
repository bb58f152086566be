"""What the log room moves around: a record (one log line with its tags) and a checkpoint (how far a file
has been stored).

A record's identity is its source file and byte offset (``LogRecord.id``): the same line read twice has the
same id, so a store can refuse a duplicate even where it cannot commit a checkpoint with its batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

FLAGS = ("truncated", "binary", "malformed", "partial")
"""Marks on a record whose line was not stored as printed: cut at the size limit, had control bytes
replaced, was not a json-file entry, or ended without a newline when its container stopped."""


@dataclass(frozen=True, slots=True)
class Tags:
    """Where a line comes from: the container's Shipline labels and the host."""

    app: str
    env: str
    release: str = ""
    port: int | None = None
    container: str = ""
    host: str = ""


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One line a container printed.

    Attributes:
        source: Identity of the file it was read from (``FileIdentity.key``).
        offset: Byte offset of the line's entry in that file.
        time: When Docker received it (UTC).
        stream: ``stdout`` or ``stderr``.
        message: The text, without its newline.
        tags: Container and host.
        fields: The fields of a JSON log line (``level``, ``msg`` …), empty for plain text.
        flags: Subset of ``FLAGS``.
    """

    source: str
    offset: int
    time: datetime
    stream: str
    message: str
    tags: Tags
    fields: dict[str, Any] = field(default_factory=dict)
    flags: frozenset[str] = frozenset()

    @property
    def id(self) -> str:
        return f"{self.source}@{self.offset}"

    @property
    def time_ns(self) -> int:
        return to_ns(self.time)

    def fields_json(self) -> str:
        return json.dumps(self.fields, ensure_ascii=False, separators=(",", ":")) if self.fields else ""

    def flags_text(self) -> str:
        return ",".join(sorted(self.flags))


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A record as a store returns it, with its place in the store's ingest order (``seq``)."""

    seq: int
    record: LogRecord

    def as_json(self) -> dict[str, Any]:
        r = self.record
        return {
            "seq": self.seq,
            "id": r.id,
            "time": r.time.isoformat().replace("+00:00", "Z"),
            "stream": r.stream,
            "message": r.message,
            "app": r.tags.app,
            "env": r.tags.env,
            "release": r.tags.release,
            "port": r.tags.port,
            "container": r.tags.container,
            "host": r.tags.host,
            "fields": r.fields,
            "flags": sorted(r.flags),
        }


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """How far one log file has been stored: every entry before ``offset`` is in the store, none after.

    Attributes:
        source: The file's identity (``FileIdentity.key``).
        path: Where the file was when last read (it moves when Docker rotates it).
        container: The container that writes it.
        offset: Byte offset of the first entry not yet stored.
    """

    source: str
    path: str
    container: str
    offset: int


def to_ns(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def from_ns(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1_000_000_000, tz=UTC)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
