"""The embedded log store: one SQLite database in WAL mode, a table pair per day.

Each day ``D`` has ``lines_D`` (the records; ``seq`` is the row id) and ``fts_D``, an FTS5 index over the
messages kept outside its content (``content='lines_D'``), with the ``trigram`` tokenizer (any substring
in any script) or ``unicode61`` (words), as set when the day's tables are created. Checkpoints live in the
same database, so a batch and the checkpoints that cover it commit in one transaction.

A trigram day made today keeps no positions (``detail=none``): the index only says which lines hold every
trigram of a term, and each such candidate is checked against the query itself, newest first, until the
limit is reached. Positions would make ingest about 1.6 times slower and the index twice as large, for
queries that the check answers as fast (``python -m bench logs``). Days made before keep their positions
and are searched with phrases, as ``partitions.tokenizer`` records.
"""

# Table names are built from dates (``%Y%m%d``) only, never from input: every value is a parameter.
# ruff: noqa: S608

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from shipline.logs.query import Node, to_fts5, to_sql, to_trigram_candidates
from shipline.logs.records import Checkpoint, LogRecord, StoredRecord, Tags, from_ns, to_ns
from shipline.logs.store import (
    DEFAULT_LIMIT,
    LogStore,
    LogStoreError,
    Partition,
    SearchRequest,
    Tokenizer,
    day_of,
)

TRIGRAM_MIN = 3
"""FTS5's trigram index finds only terms of three characters or more; shorter ones are scanned for."""
SPARSE_TRIGRAM = "trigram detail=none"
"""``partitions.tokenizer`` of a trigram day without positions (candidates checked against the query)."""

_COLUMNS = "seq, ts, source, off, stream, app, env, release, port, container, host, fields, flags, message"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints(
    source TEXT PRIMARY KEY, path TEXT NOT NULL, container TEXT NOT NULL, off INTEGER NOT NULL,
    updated INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS partitions(
    day TEXT PRIMARY KEY, tokenizer TEXT NOT NULL, lines INTEGER NOT NULL, bytes INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta(key, value) VALUES ('last_seq', 0);
"""


def _contains(message: str | None, term: str) -> bool:
    return message is not None and term.casefold() in message.casefold()


class SqliteStore(LogStore):
    """The embedded store at ``path``.

    Args:
        path: The database file (created with its directory).
        tokenizer: For day tables created from now on.
        busy_seconds: How long a statement waits for another writer before it fails.
    """

    kind = "sqlite"

    def __init__(self, path: Path, *, tokenizer: Tokenizer = "trigram", busy_seconds: float = 5.0) -> None:
        self.path = path
        self.tokenizer = tokenizer
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(
                path, isolation_level=None, timeout=busy_seconds, check_same_thread=False
            )
            self.db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect on a new database only
            self.db.execute("PRAGMA journal_mode=WAL")
            # WAL with NORMAL: a commit survives the process being killed (not a power cut, at worse a
            # rollback of the last batches, whose checkpoints roll back with them).
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.create_function("shipline_contains", 2, _contains, deterministic=True)
            with self._transaction():
                for statement in _SCHEMA.strip().split(";\n"):
                    if statement.strip():
                        self.db.execute(statement)
        except sqlite3.Error as exc:
            raise _store_error(exc, f"open the log store {path}") from exc
        self._known_days: set[str] = set()

    # -- writing ---------------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _ensure_day(self, day: str) -> None:
        if day in self._known_days:
            return
        row = self.db.execute("SELECT 1 FROM partitions WHERE day = ?", (day,)).fetchone()
        if row is None:
            if self.tokenizer == "trigram":
                kind, options = SPARSE_TRIGRAM, "tokenize='trigram', detail=none"
            else:
                kind, options = self.tokenizer, "tokenize='unicode61 remove_diacritics 2'"
            self.db.execute(
                f"CREATE TABLE IF NOT EXISTS lines_{day}(seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL, "
                "source TEXT NOT NULL, off INTEGER NOT NULL, stream TEXT NOT NULL, app TEXT NOT NULL, "
                "env TEXT NOT NULL, release TEXT NOT NULL, port INTEGER, container TEXT NOT NULL, "
                "host TEXT NOT NULL, fields TEXT NOT NULL, flags TEXT NOT NULL, message TEXT NOT NULL)"
            )
            # The row id follows the app in the index: an app's lines come newest first, without a sort.
            self.db.execute(f"CREATE INDEX IF NOT EXISTS lines_{day}_app ON lines_{day}(app)")
            self.db.execute(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS fts_{day} USING fts5(message, content='lines_{day}', "
                f"content_rowid='seq', columnsize=0, {options})"
            )
            # Deletions (retention per app) keep the external-content index in step.
            self.db.execute(
                f"CREATE TRIGGER IF NOT EXISTS lines_{day}_delete AFTER DELETE ON lines_{day} BEGIN "
                f"INSERT INTO fts_{day}(fts_{day}, rowid, message) "
                "VALUES ('delete', old.seq, old.message); END"
            )
            self.db.execute(
                "INSERT INTO partitions(day, tokenizer, lines, bytes) VALUES (?, ?, 0, 0)",
                (day, kind),
            )
        self._known_days.add(day)

    def write(self, records: Sequence[LogRecord], checkpoints: Sequence[Checkpoint]) -> None:
        try:
            with self._transaction():
                seq = self.db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()[0]
                by_day: dict[str, list[tuple[Any, ...]]] = {}
                sizes: dict[str, int] = {}
                names: dict[date, str] = {}
                for record in records:
                    seq += 1
                    moment = record.time
                    when = moment.date() if moment.tzinfo is UTC else day_of(moment)
                    day = names.get(when) or names.setdefault(when, when.strftime("%Y%m%d"))
                    tags = record.tags
                    by_day.setdefault(day, []).append(
                        (
                            seq,
                            to_ns(record.time),
                            record.source,
                            record.offset,
                            record.stream,
                            tags.app,
                            tags.env,
                            tags.release,
                            tags.port,
                            tags.container,
                            tags.host,
                            record.fields_json(),
                            record.flags_text(),
                            record.message,
                        )
                    )
                    sizes[day] = sizes.get(day, 0) + len(record.message.encode("utf-8", "replace"))
                for day, rows in by_day.items():
                    self._ensure_day(day)
                    self.db.executemany(
                        f"INSERT INTO lines_{day}({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows
                    )
                    if _contiguous(rows):
                        self.db.execute(
                            f"INSERT INTO fts_{day}(rowid, message) SELECT seq, message FROM lines_{day} "
                            "WHERE seq BETWEEN ? AND ?",
                            (rows[0][0], rows[-1][0]),
                        )
                    else:
                        self.db.executemany(
                            f"INSERT INTO fts_{day}(rowid, message) VALUES (?, ?)",
                            [(r[0], r[13]) for r in rows],
                        )
                    self.db.execute(
                        "UPDATE partitions SET lines = lines + ?, bytes = bytes + ? WHERE day = ?",
                        (len(rows), sizes[day], day),
                    )
                self.db.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (seq,))
                now = time.time_ns()
                self.db.executemany(
                    "INSERT INTO checkpoints(source, path, container, off, updated) VALUES (?,?,?,?,?) "
                    "ON CONFLICT(source) DO UPDATE SET path = excluded.path, container = excluded.container, "
                    "off = excluded.off, updated = excluded.updated",
                    [(c.source, c.path, c.container, c.offset, now) for c in checkpoints],
                )
        except sqlite3.Error as exc:
            self._known_days.clear()  # a rolled-back transaction may have created a day's tables
            raise _store_error(exc, "write a batch") from exc

    def checkpoints(self) -> dict[str, Checkpoint]:
        rows = self._read("SELECT source, path, container, off FROM checkpoints")
        return {r[0]: Checkpoint(source=r[0], path=r[1], container=r[2], offset=r[3]) for r in rows}

    def forget_checkpoints(self, sources: Sequence[str]) -> None:
        """Drop checkpoints of files that no longer exist."""
        try:
            with self._transaction():
                self.db.executemany("DELETE FROM checkpoints WHERE source = ?", [(s,) for s in sources])
        except sqlite3.Error as exc:
            raise _store_error(exc, "forget checkpoints") from exc

    # -- reading ---------------------------------------------------------------------------------------

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _store_error(exc, "read") from exc

    def _days(self, newest_first: bool = True) -> list[tuple[str, str]]:
        order = "DESC" if newest_first else "ASC"
        return [
            (r[0], r[1]) for r in self._read(f"SELECT day, tokenizer FROM partitions ORDER BY day {order}")
        ]

    def search(self, request: SearchRequest) -> list[StoredRecord]:
        found: list[StoredRecord] = []
        since_day = day_of(request.since).strftime("%Y%m%d") if request.since else None
        until_day = day_of(request.until).strftime("%Y%m%d") if request.until else None
        for day, tokenizer in self._days():
            if (since_day and day < since_day) or (until_day and day > until_day):
                continue
            found.extend(self._search_day(day, tokenizer, request, request.limit - len(found)))
            if len(found) >= request.limit:
                break
        return found[: request.limit]

    def _search_day(self, day: str, tokenizer: str, request: SearchRequest, limit: int) -> list[StoredRecord]:
        filters, params = _filters(request.app, request.env, request.since, request.until)
        if tokenizer == SPARSE_TRIGRAM:
            match = to_trigram_candidates(request.query)
            if match is not None:
                # After the cheap filters: SQLite tests the terms of a WHERE in their written order.
                condition, term_params = _scan_condition(request.query)
                filters, params = [*filters, condition], [*params, *term_params]
        else:
            match = to_fts5(request.query, min_term=TRIGRAM_MIN if tokenizer == "trigram" else 0)
        if match is not None:
            where = " AND ".join(["f.fts_" + day + " MATCH ?", *filters])
            sql = (
                f"SELECT {_prefixed('l')} FROM fts_{day} f JOIN lines_{day} l ON l.seq = f.rowid "
                f"WHERE {where} ORDER BY f.rowid DESC LIMIT ?"
            )
            rows = self._read(sql, [match, *params, limit])
        else:
            condition, term_params = _scan_condition(request.query)
            where = " AND ".join([condition, *filters])
            sql = f"SELECT {_prefixed('l')} FROM lines_{day} l WHERE {where} ORDER BY l.seq DESC LIMIT ?"
            rows = self._read(sql, [*term_params, *params, limit])
        return [_stored(row) for row in rows]

    def after(
        self, seq: int, *, app: str | None = None, env: str | None = None, limit: int = DEFAULT_LIMIT
    ) -> list[StoredRecord]:
        filters, params = _filters(app, env, None, None)
        where = " AND ".join(["l.seq > ?", *filters])
        rows: list[tuple[Any, ...]] = []
        for day, _ in self._days():
            sql = f"SELECT {_prefixed('l')} FROM lines_{day} l WHERE {where} ORDER BY l.seq LIMIT ?"
            rows.extend(self._read(sql, [seq, *params, limit]))
        rows.sort(key=lambda row: row[0])
        return [_stored(row) for row in rows[:limit]]

    def last_seq(self) -> int:
        return int(self._read("SELECT value FROM meta WHERE key = 'last_seq'")[0][0])

    def count(self, *, app: str | None = None, env: str | None = None) -> int:
        if app is None and env is None:
            return sum(p.lines for p in self.partitions())
        filters, params = _filters(app, env, None, None)
        total = 0
        for day, _ in self._days():
            total += self._read(f"SELECT count(*) FROM lines_{day} l WHERE {' AND '.join(filters)}", params)[
                0
            ][0]
        return total

    def partitions(self) -> list[Partition]:
        rows = self._read("SELECT day, lines, bytes FROM partitions ORDER BY day")
        return [Partition(day=datetime.strptime(r[0], "%Y%m%d").date(), lines=r[1], bytes=r[2]) for r in rows]

    # -- maintenance -----------------------------------------------------------------------------------

    def drop_partition(self, day: date) -> None:
        name = day.strftime("%Y%m%d")
        try:
            with self._transaction():
                self.db.execute(f"DROP TABLE IF EXISTS fts_{name}")
                self.db.execute(f"DROP TABLE IF EXISTS lines_{name}")
                self.db.execute("DELETE FROM partitions WHERE day = ?", (name,))
            self._known_days.discard(name)
            self.db.execute("PRAGMA incremental_vacuum")
        except sqlite3.Error as exc:
            raise _store_error(exc, f"drop the partition of {day}") from exc

    def delete_before(self, app: str, before: datetime) -> int:
        last = day_of(before).strftime("%Y%m%d")
        removed = 0
        try:
            for day, _ in self._days(newest_first=False):
                if day > last:
                    break
                with self._transaction():
                    where = "app = ? AND ts < ?"
                    params = (app, to_ns(before))
                    lines, size = self.db.execute(
                        f"SELECT count(*), coalesce(sum(length(CAST(message AS BLOB))), 0) FROM lines_{day} "
                        f"WHERE {where}",
                        params,
                    ).fetchone()
                    if lines:
                        self.db.execute(f"DELETE FROM lines_{day} WHERE {where}", params)
                        self.db.execute(
                            "UPDATE partitions SET lines = lines - ?, bytes = bytes - ? WHERE day = ?",
                            (lines, size, day),
                        )
                removed += lines
        except sqlite3.Error as exc:
            raise _store_error(exc, f"delete old records of {app}") from exc
        return removed

    def optimize_partition(self, day: date) -> str:
        name = day.strftime("%Y%m%d")
        try:
            with self._transaction():
                self.db.execute(f"INSERT INTO fts_{name}(fts_{name}) VALUES ('optimize')")
            self.db.execute("PRAGMA incremental_vacuum")
        except sqlite3.Error as exc:
            raise _store_error(exc, f"optimize the partition of {day}") from exc
        return "fts5 optimize"

    def close(self) -> None:
        self.db.close()


def _contiguous(rows: list[tuple[Any, ...]]) -> bool:
    return rows[-1][0] - rows[0][0] == len(rows) - 1


def _prefixed(alias: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in _COLUMNS.split(","))


def _filters(
    app: str | None, env: str | None, since: datetime | None, until: datetime | None
) -> tuple[list[str], list[object]]:
    filters: list[str] = ["1 = 1"]
    params: list[object] = []
    if app:
        filters.append("l.app = ?")
        params.append(app)
    if env:
        filters.append("l.env = ?")
        params.append(env)
    if since:
        filters.append("l.ts >= ?")
        params.append(to_ns(since))
    if until:
        filters.append("l.ts <= ?")
        params.append(to_ns(until))
    return filters, params


def _scan_condition(query: Node) -> tuple[str, list[object]]:
    return to_sql(query, lambda term: ("shipline_contains(l.message, ?)", [term]))


def _stored(row: tuple[Any, ...]) -> StoredRecord:
    seq, ts, source, off, stream, app, env, release, port, container, host, fields, flags, message = row
    record = LogRecord(
        source=source,
        offset=off,
        time=from_ns(ts),
        stream=stream,
        message=message,
        tags=Tags(app=app, env=env, release=release, port=port, container=container, host=host),
        fields=json.loads(fields) if fields else {},
        flags=frozenset(flags.split(",")) if flags else frozenset(),
    )
    return StoredRecord(seq=seq, record=record)


def _store_error(exc: sqlite3.Error, doing: str) -> LogStoreError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        hint = "another process holds the log database; the agent retries"
    elif "full" in text:
        hint = "free disk space (or drop old partitions: the log-maintenance flow); the agent retries"
    else:
        hint = "check the log database and its disk"
    return LogStoreError(f"SQLite log store: could not {doing}: {text}", hint=hint, transient=True)
