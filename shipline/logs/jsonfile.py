"""Reading Docker's json-file logs: which file is which, and the records in it.

Docker writes one JSON object per line: ``{"log": "text\\n", "stream": "stdout", "time": "…Z"}``; a line
longer than 16 KiB arrives as several entries, all but the last without the trailing newline. Docker
rotates by renaming ``ID-json.log`` to ``ID-json.log.1`` (and so on) and starting a new file.

A file is known by its identity, not its name: device, inode and a fingerprint of its first bytes (as
Vector and LoongCollector do), so a renamed file keeps its checkpoint and a new file that reuses an inode
is not taken for the old one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

from shipline.logs.records import LogRecord, Tags

FINGERPRINT_BYTES = 1024
"""How much of a file's start identifies it (less while the file is shorter; the length is in the key)."""
MAX_MESSAGE = 64 * 1024
"""A longer line is stored cut to this many characters and flagged ``truncated``."""
MAX_ENTRY = 256 * 1024
"""A json-file entry is at most ~16 KiB of text; a longer run without a newline is not one (malformed)."""
MAX_FIELDS = 64

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_decode = json.JSONDecoder().decode
_SECONDS: dict[str, datetime] = {}


@dataclass(frozen=True, slots=True)
class FileIdentity:
    device: int
    inode: int
    length: int
    digest: str

    @property
    def key(self) -> str:
        return f"{self.device}:{self.inode}:{self.length}:{self.digest}"

    @classmethod
    def parse(cls, key: str) -> FileIdentity | None:
        parts = key.split(":")
        if len(parts) != 4 or not all(p.isdigit() for p in parts[:3]):
            return None
        return cls(int(parts[0]), int(parts[1]), int(parts[2]), parts[3])


def fingerprint(handle: BinaryIO, length: int) -> str:
    head = os.pread(handle.fileno(), length, 0)
    return hashlib.blake2b(head, digest_size=8).hexdigest() if len(head) == length else ""


def identify(handle: BinaryIO) -> FileIdentity | None:
    """The identity of an open file, or None while it is empty (nothing to tell it by yet)."""
    stat = os.fstat(handle.fileno())
    length = min(stat.st_size, FINGERPRINT_BYTES)
    if length == 0:
        return None
    return FileIdentity(stat.st_dev, stat.st_ino, length, fingerprint(handle, length))


def same_file(handle: BinaryIO, identity: FileIdentity) -> bool:
    """Whether ``handle`` is the file ``identity`` was taken of (same inode, same first bytes)."""
    stat = os.fstat(handle.fileno())
    return (
        (stat.st_dev, stat.st_ino) == (identity.device, identity.inode)
        and stat.st_size >= identity.length
        and fingerprint(handle, identity.length) == identity.digest
    )


def parse_time(text: str) -> datetime:
    """Docker's RFC 3339 time with nanoseconds (``2026-11-25T10:00:00.123456789Z``), fast for repeats."""
    base = _SECONDS.get(text[:19])
    if base is None:
        base = datetime.fromisoformat(text[:19]).replace(tzinfo=UTC)
        if len(_SECONDS) > 4096:
            _SECONDS.clear()
        _SECONDS[text[:19]] = base
    if text[19:20] == "." and text[-1:] == "Z" and text[20:-1].isdigit():  # UTC, as Docker writes it
        return base + timedelta(microseconds=int(text[20:-1][:6].ljust(6, "0")))
    seconds = int(base.timestamp())
    rest = text[19:]
    micros = 0
    if rest.startswith("."):
        digits = rest[1:].rstrip("Z")
        end = 0
        while end < len(digits) and digits[end].isdigit():
            end += 1
        rest = digits[end:]
        micros = int((digits[:end] + "000000")[:6])
    offset = timedelta(0)
    if rest and rest[0] in "+-" and len(rest) >= 6:  # a zone other than Z
        sign = 1 if rest[0] == "+" else -1
        offset = sign * timedelta(hours=int(rest[1:3]), minutes=int(rest[4:6]))
    return datetime.fromtimestamp(seconds, tz=UTC) + timedelta(microseconds=micros) - offset


def clean(text: str) -> tuple[str, frozenset[str]]:
    """Text safe to store and show: control bytes (but tabs) replaced, flagged ``binary``; cut to size."""
    flags: set[str] = set()
    if _CONTROL.search(text) or "\ufffd" in text:
        text = _CONTROL.sub("\ufffd", text)
        flags.add("binary")
    if len(text) > MAX_MESSAGE:
        text = text[:MAX_MESSAGE]
        flags.add("truncated")
    return text, frozenset(flags)


def app_fields(message: str) -> dict[str, Any]:
    """The fields of a JSON log line (a flat-ish object), else nothing."""
    if not (message.startswith("{") and message.endswith("}")):
        return {}
    try:
        value = json.loads(message)
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return dict(list(value.items())[:MAX_FIELDS])


@dataclass
class Pending:
    """A long line Docker split into entries: what has arrived so far."""

    offset: int
    time: datetime
    stream: str
    parts: list[str] = field(default_factory=list)
    size: int = 0
    truncated: bool = False


def _by_offset(record: LogRecord) -> int:
    return record.offset


MAX_HELD = 10_000
"""Complete lines held back behind a split line whose end has not come, before that line is given up."""


@dataclass
class TailedFile:
    """One json-file log being read: where reading stands and where storing stands.

    ``offset`` is the end of the last entry turned into a record, so a checkpoint may be committed there.
    While a split line waits for its end, the records after it are held back with it, and the checkpoint
    stays at the split line's start: a restart reads them all again, having stored none of them.
    """

    path: str
    handle: BinaryIO
    identity: FileIdentity
    container: str
    tags: Tags
    offset: int = 0
    read_to: int = 0
    pending: dict[str, Pending] = field(default_factory=dict)
    held: list[LogRecord] = field(default_factory=list)
    buffer: bytes = b""

    def __post_init__(self) -> None:
        self.read_to = max(self.read_to, self.offset)

    @property
    def committed_offset(self) -> int:
        if self.pending:
            return min(p.offset for p in self.pending.values())
        return self.offset

    def size(self) -> int:
        return os.fstat(self.handle.fileno()).st_size

    def read(self, limit: int) -> list[LogRecord]:
        """Records from the next ``limit`` bytes at most (complete entries only)."""
        data = os.pread(self.handle.fileno(), limit, self.read_to)
        if not data:
            return []
        chunk = self.buffer + data
        base = self.read_to - len(self.buffer)
        self.read_to += len(data)
        out: list[LogRecord] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                break
            self._entry(chunk[start:end], base + start, base + end + 1, out)
            start = end + 1
        self.buffer = chunk[start:]
        if len(self.buffer) > MAX_ENTRY:  # no newline in sight: not a json-file entry; store what there is
            self._malformed(self.buffer, base + start, base + len(chunk), out)
            self.buffer = b""
        return out

    def _entry(self, line: bytes, offset: int, end: int, out: list[LogRecord]) -> None:
        try:
            entry: Any = _decode(line.decode("utf-8", "surrogatepass"))  # bad UTF-8: ValueError, malformed
        except ValueError:
            entry = None
        if not isinstance(entry, dict) or not isinstance(entry.get("log"), str):
            self._malformed(line, offset, end, out)
            return
        text: str = entry["log"]
        stream = str(entry.get("stream", "stdout"))
        time_text = entry.get("time")
        try:
            moment = parse_time(time_text) if isinstance(time_text, str) else datetime.now(UTC)
        except ValueError:
            moment = datetime.now(UTC)
        pending = self.pending.get(stream)
        if not text.endswith("\n"):  # a part of a split line (or the last line of a stopped container)
            if pending is None:
                pending = self.pending[stream] = Pending(offset=offset, time=moment, stream=stream)
            if pending.size < MAX_MESSAGE:
                pending.parts.append(text)
            else:
                pending.truncated = True
            pending.size += len(text)
            self._end_at(end, out)
            return
        if pending is not None:
            del self.pending[stream]
            pending.parts.append(text)
            self._add(
                self._record(pending.offset, pending.time, stream, "".join(pending.parts), pending.truncated)
            )
        else:
            self._add(self._record(offset, moment, stream, text, False))
        self._end_at(end, out)

    def _malformed(self, line: bytes, offset: int, end: int, out: list[LogRecord]) -> None:
        text, flags = clean(line.decode("utf-8", "replace").rstrip("\r"))
        self._add(
            LogRecord(
                source=self.identity.key,
                offset=offset,
                time=datetime.now(UTC),
                stream="unknown",
                message=text,
                tags=self.tags,
                flags=flags | {"malformed"},
            )
        )
        self._end_at(end, out)

    def _add(self, record: LogRecord) -> None:
        self.held.append(record)

    def _end_at(self, end: int, out: list[LogRecord]) -> None:
        """The entry ending at ``end`` is read: release what is held unless a split line still waits."""
        if self.pending:
            if len(self.held) < MAX_HELD:
                return
            self._give_up_pending()  # waited too long behind a split line that does not end: give it up
        if len(self.held) == 1:  # the usual case, one line at a time
            out.append(self.held.pop())
        else:
            self.held.sort(key=_by_offset)
            out.extend(self.held)
            self.held = []
        self.offset = end

    def _give_up_pending(self) -> None:
        for pending in self.pending.values():
            text = "".join(pending.parts)
            record = self._record(pending.offset, pending.time, pending.stream, text, pending.truncated)
            self._add(replace(record, flags=record.flags | {"partial"}))
        self.pending = {}

    def _record(self, offset: int, moment: datetime, stream: str, text: str, truncated: bool) -> LogRecord:
        text = text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text
        message, flags = clean(text)
        if truncated:
            flags = flags | {"truncated"}
        return LogRecord(
            source=self.identity.key,
            offset=offset,
            time=moment,
            stream=stream,
            message=message,
            tags=self.tags,
            fields=app_fields(message) if len(message) < 16384 else {},
            flags=flags,
        )

    def finish(self) -> list[LogRecord]:
        """At the end of a file that will not grow: a split line still waiting is stored as it is."""
        out: list[LogRecord] = []
        if self.pending:
            self._give_up_pending()
            self._end_at(self.read_to - len(self.buffer), out)
        return out
