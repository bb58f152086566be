"""The shared log store: PostgreSQL, one table partitioned by UTC day, searched through pg_trgm.

``log_lines`` is partitioned by range on ``time``; the partition of day ``D`` is ``log_lines_D``
(``%Y%m%d``), created on demand inside the transaction that first writes into it. A ``pg_trgm`` GIN index
on ``message`` serves every search term (``message ILIKE '%term%'``: any substring, any script, any case),
a btree on ``(app, env, seq)`` serves ``tail``; both are declared on the parent, so each new partition gets
them. ``seq`` comes from one sequence (ingest order across every partition). The agent's checkpoints and a
counter row per day (lines, message bytes) change in the same transaction as the batch they describe.

Writers take one advisory transaction lock: partitions are never created twice at once, and rows commit in
``seq`` order, so that ``after(seq)`` never skips a row that a slower writer committed later. One agent per
host writes in batches, so the lock costs little.

Errors surface as ``LogStoreError``: a lost or refused connection is ``transient`` (the agent keeps its batch
and tries again) and the next call opens a new connection, so the store outlives a server restart.
"""

# Table names are built from dates (``%Y%m%d``) only, never from input: every value is a parameter.
# ruff: noqa: S608

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict

from shipline.logs.query import Node, to_sql
from shipline.logs.records import Checkpoint, LogRecord, StoredRecord, Tags
from shipline.logs.store import DEFAULT_LIMIT, LogStore, LogStoreError, Partition, SearchRequest, day_of

CONNECT_TIMEOUT = 5
"""Seconds to wait for the server before a call fails (transiently)."""

_WRITER_LOCK = 0x5348_4950_4C4F_4753  # "SHIPLOGS": held by writers and by partition drops, per transaction

_COPY_COLUMNS = "time, source, off, stream, app, env, release, port, container, host, fields, flags, message"
_COLUMNS = f"seq, {_COPY_COLUMNS}"

_SCHEMA = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE SEQUENCE IF NOT EXISTS log_seq AS bigint",
    "CREATE TABLE IF NOT EXISTS log_lines("
    " seq bigint NOT NULL DEFAULT nextval('log_seq'), time timestamptz NOT NULL, source text NOT NULL,"
    " off bigint NOT NULL, stream text NOT NULL, app text NOT NULL, env text NOT NULL,"
    " release text NOT NULL, port integer, container text NOT NULL, host text NOT NULL,"
    " fields text NOT NULL, flags text NOT NULL, message text NOT NULL"
    ") PARTITION BY RANGE (time)",
    "CREATE INDEX IF NOT EXISTS log_lines_message ON log_lines USING gin (message gin_trgm_ops)",
    "CREATE INDEX IF NOT EXISTS log_lines_app_env_seq ON log_lines (app, env, seq)",
    "CREATE INDEX IF NOT EXISTS log_lines_seq ON log_lines (seq)",
    "CREATE TABLE IF NOT EXISTS log_checkpoints("
    " source text PRIMARY KEY, path text NOT NULL, container text NOT NULL, off bigint NOT NULL,"
    " updated timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE IF NOT EXISTS log_partitions("
    " day date PRIMARY KEY, lines bigint NOT NULL, bytes bigint NOT NULL)",
]

T = TypeVar("T")


class PostgresStore(LogStore):
    """The store in the PostgreSQL database at ``url``; creates its tables on first use.

    Args:
        url: A libpq connection URL (``postgresql://user@host:port/dbname``).

    Raises:
        LogStoreError: the server does not answer (transient) or refuses the schema.
    """

    kind = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = url
        self._connection: psycopg.Connection[tuple[Any, ...]] | None = None
        self._schema_ready = False
        self._committing = False
        self._run("open the log store", lambda conn: None)

    # -- connection ------------------------------------------------------------------------------------

    @property
    def where(self) -> str:
        """The server and database, without credentials: for messages."""
        try:
            info = conninfo_to_dict(self.url)
        except psycopg.ProgrammingError:
            return "an unreadable connection URL"
        return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._connection is not None and not self._connection.closed:
            return self._connection
        connection = psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
            application_name="shipline-logs",
            options="-c TimeZone=UTC",
        )
        try:
            if not self._schema_ready:
                with connection.transaction():
                    connection.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITER_LOCK,))
                    for statement in _SCHEMA:
                        connection.execute(statement)
                self._schema_ready = True
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        return connection

    def _run(self, doing: str, work: Callable[[psycopg.Connection[tuple[Any, ...]]], T]) -> T:
        """``work`` on the connection, opened anew if the last one was lost.

        A connection that dies under a call (the server restarted, or dropped this backend, since the
        previous call) gets one more try on a new connection, unless the call had already asked to commit,
        when only the server knows whether it did.
        """
        for attempt in (1, 2):
            reused = self._connection is not None and not self._connection.closed
            self._committing = False
            try:
                return work(self._connect())
            except psycopg.Error as exc:
                lost = isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
                if lost and self._connection is not None:
                    self._connection.close()
                    self._connection = None
                if lost and reused and attempt == 1 and not self._committing:
                    continue
                raise self._error(exc, doing) from exc
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _error(self, exc: psycopg.Error, doing: str) -> LogStoreError:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        message = f"PostgreSQL log store at {self.where}: could not {doing}: {text}"
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            return LogStoreError(
                message,
                hint="is PostgreSQL running and reachable (shipline status)? Nothing was lost: "
                "the agent keeps its batch and tries again",
                transient=True,
            )
        if isinstance(exc, psycopg.errors.TransactionRollback):
            return LogStoreError(
                message, hint="a concurrent transaction got in the way; try again", transient=True
            )
        return LogStoreError(message, hint="check the log database (its schema, disk and permissions)")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # -- writing ---------------------------------------------------------------------------------------

    def write(self, records: Sequence[LogRecord], checkpoints: Sequence[Checkpoint]) -> None:
        rows: list[tuple[Any, ...]] = []
        lines: dict[date, int] = {}
        sizes: dict[date, int] = {}
        for record in records:
            message, size = _storable(record.message)
            day = day_of(record.time)
            rows.append(_row(record, message))
            lines[day] = lines.get(day, 0) + 1
            sizes[day] = sizes.get(day, 0) + size

        def work(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
            with conn.transaction(), conn.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITER_LOCK,))
                _ensure_partitions(cursor, sorted(lines))
                # COPY takes the rows in input order, and the sequence numbers them in that order.
                with cursor.copy(f"COPY log_lines ({_COPY_COLUMNS}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                cursor.executemany(
                    "UPDATE log_partitions SET lines = lines + %s, bytes = bytes + %s WHERE day = %s",
                    [(lines[day], sizes[day], day) for day in lines],
                )
                cursor.executemany(
                    "INSERT INTO log_checkpoints(source, path, container, off, updated) "
                    "VALUES (%s, %s, %s, %s, now()) ON CONFLICT (source) DO UPDATE SET "
                    "path = excluded.path, container = excluded.container, off = excluded.off, "
                    "updated = excluded.updated",
                    [(c.source, c.path, c.container, c.offset) for c in checkpoints],
                )
                self._committing = True  # leaving the block sends COMMIT

        self._run("write a batch", work)

    def checkpoints(self) -> dict[str, Checkpoint]:
        rows = self._read("read checkpoints", "SELECT source, path, container, off FROM log_checkpoints")
        return {r[0]: Checkpoint(source=r[0], path=r[1], container=r[2], offset=r[3]) for r in rows}

    def forget_checkpoints(self, sources: Sequence[str]) -> None:
        """Drop checkpoints of files that no longer exist."""
        self._run(
            "forget checkpoints",
            lambda conn: conn.execute("DELETE FROM log_checkpoints WHERE source = ANY(%s)", (list(sources),)),
        )

    # -- reading ---------------------------------------------------------------------------------------

    def _read(self, doing: str, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._run(doing, lambda conn: conn.execute(sql, params).fetchall())

    def search(self, request: SearchRequest) -> list[StoredRecord]:
        condition, params = _match_condition(request.query)
        filters, filter_params = _filters(request.app, request.env, request.since, request.until)
        where = " AND ".join([condition, *filters])
        sql = f"SELECT {_COLUMNS} FROM log_lines WHERE {where} ORDER BY seq DESC LIMIT %s"
        rows = self._read("search", sql, [*params, *filter_params, request.limit])
        return [_stored(row) for row in rows]

    def after(
        self, seq: int, *, app: str | None = None, env: str | None = None, limit: int = DEFAULT_LIMIT
    ) -> list[StoredRecord]:
        filters, params = _filters(app, env, None, None)
        where = " AND ".join(["seq > %s", *filters])
        sql = f"SELECT {_COLUMNS} FROM log_lines WHERE {where} ORDER BY seq LIMIT %s"
        return [_stored(row) for row in self._read("read new records", sql, [seq, *params, limit])]

    def last_seq(self) -> int:
        # The newest committed row, not the sequence: a rolled-back batch leaves a gap in the numbers.
        return int(self._read("read the newest record", "SELECT coalesce(max(seq), 0) FROM log_lines")[0][0])

    def count(self, *, app: str | None = None, env: str | None = None) -> int:
        if app is None and env is None:
            return int(
                self._read("count records", "SELECT coalesce(sum(lines), 0) FROM log_partitions")[0][0]
            )
        filters, params = _filters(app, env, None, None)
        sql = f"SELECT count(*) FROM log_lines WHERE {' AND '.join(filters)}"
        return int(self._read("count records", sql, params)[0][0])

    def partitions(self) -> list[Partition]:
        rows = self._read("list partitions", "SELECT day, lines, bytes FROM log_partitions ORDER BY day")
        return [Partition(day=r[0], lines=r[1], bytes=r[2]) for r in rows]

    # -- maintenance -----------------------------------------------------------------------------------

    def drop_partition(self, day: date) -> None:
        name = _partition_name(day)

        def work(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITER_LOCK,))
                if _exists(conn, name):
                    conn.execute(f"ALTER TABLE log_lines DETACH PARTITION {name}")
                    conn.execute(f"DROP TABLE {name}")
                conn.execute("DELETE FROM log_partitions WHERE day = %s", (day,))

        self._run(f"drop the partition of {day}", work)

    def delete_before(self, app: str, before: datetime) -> int:
        def work(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
            with conn.transaction():
                gone = conn.execute(
                    "WITH gone AS ("
                    " DELETE FROM log_lines WHERE app = %s AND time < %s RETURNING time, message) "
                    "SELECT (time AT TIME ZONE 'UTC')::date, count(*), "
                    " coalesce(sum(octet_length(message)), 0) "
                    "FROM gone GROUP BY 1",
                    (app, before),
                ).fetchall()
                with conn.cursor() as cursor:
                    cursor.executemany(
                        "UPDATE log_partitions SET lines = lines - %s, bytes = bytes - %s WHERE day = %s",
                        [(lines, size, day) for day, lines, size in gone],
                    )
            return sum(int(lines) for _, lines, _ in gone)

        return self._run(f"delete old records of {app}", work)

    def optimize_partition(self, day: date) -> str:
        name = _partition_name(day)

        def work(conn: psycopg.Connection[tuple[Any, ...]]) -> None:
            if not _exists(conn, name):
                raise LogStoreError(
                    f"PostgreSQL log store at {self.where}: no partition for {day}",
                    hint="list the days with records: shipline logs partitions",
                )
            # The connection is in autocommit mode: VACUUM cannot run inside a transaction.
            conn.execute(f"VACUUM (ANALYZE) {name}")

        self._run(f"optimize the partition of {day}", work)
        return "vacuum analyze"


def _partition_name(day: date) -> str:
    return f"log_lines_{day.strftime('%Y%m%d')}"


def _exists(conn: psycopg.Connection[tuple[Any, ...]], table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def _ensure_partitions(cursor: psycopg.Cursor[tuple[Any, ...]], days: list[date]) -> None:
    """Create the partitions of ``days`` that do not exist yet (the caller holds the writer lock)."""
    cursor.execute("SELECT day FROM log_partitions WHERE day = ANY(%s)", (days,))
    known = {row[0] for row in cursor.fetchall()}
    for day in days:
        if day in known:
            continue
        start = datetime.combine(day, time(), tzinfo=UTC)
        end = start + timedelta(days=1)
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {_partition_name(day)} PARTITION OF log_lines "
            f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        )
        cursor.execute(
            "INSERT INTO log_partitions(day, lines, bytes) VALUES (%s, 0, 0) ON CONFLICT (day) DO NOTHING",
            (day,),
        )


def _storable(text: str) -> tuple[str, int]:
    """``text`` as PostgreSQL can hold it, and its size in UTF-8 bytes.

    A text value cannot contain NUL, nor a lone surrogate (which a JSON line may carry): both become U+FFFD.
    The agent has flagged such lines ``binary`` already; storing them must never fail the batch.
    """
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        return text, len(text.encode("utf-8"))
    except UnicodeEncodeError:
        encoded = text.encode("utf-8", "replace")
        return encoded.decode("utf-8"), len(encoded)


def _row(record: LogRecord, message: str) -> tuple[Any, ...]:
    tags = record.tags
    return (
        record.time,
        _storable(record.source)[0],
        record.offset,
        record.stream,
        tags.app,
        tags.env,
        tags.release,
        tags.port,
        tags.container,
        tags.host,
        _storable(record.fields_json())[0],
        record.flags_text(),
        message,
    )


def _like_pattern(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _match_condition(query: Node) -> tuple[str, list[object]]:
    return to_sql(query, lambda term: ("message ILIKE %s", [_like_pattern(term)]))


def _filters(
    app: str | None, env: str | None, since: datetime | None, until: datetime | None
) -> tuple[list[str], list[object]]:
    filters: list[str] = ["true"]
    params: list[object] = []
    if app:
        filters.append("app = %s")
        params.append(app)
    if env:
        filters.append("env = %s")
        params.append(env)
    if since:
        filters.append("time >= %s")
        params.append(since)
    if until:
        filters.append("time <= %s")
        params.append(until)
    return filters, params


def _stored(row: tuple[Any, ...]) -> StoredRecord:
    seq, moment, source, off, stream, app, env, release, port, container, host, fields, flags, message = row
    record = LogRecord(
        source=source,
        offset=off,
        time=moment.astimezone(UTC),
        stream=stream,
        message=message,
        tags=Tags(app=app, env=env, release=release, port=port, container=container, host=host),
        fields=json.loads(fields) if fields else {},
        flags=frozenset(flags.split(",")) if flags else frozenset(),
    )
    return StoredRecord(seq=seq, record=record)
