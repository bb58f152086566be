"""The log room: ingest from json-file to searchable, the agent's CPU under a steady load, and search.

Three harnesses, each figure named after its harness:

- ``ingest_*``: json-file logs pre-written to disk in 8 fake containers; ``Agent.step()`` in this process
  (one core: SQLite runs in it; PostgreSQL's server works in its own process) until drained, into a fresh
  store; MiB/s of json-file bytes and lines/s of stored lines, for ~1 KiB and 200-byte lines.
- ``steady_*``: a writer process appends to 10 logs at 100 KB/s each in bursts every 100 ms for 20 s; the
  agent runs alone in its own process (``python -m bench.logs_files agent``) on a SQLite trigram store; its
  CPU comes from ``/proc`` over the window. A marker line a second per container carries its write time;
  this process polls the store for new rows every 20 ms, so a delay is written → stored, +≤ 20 ms.
- ``search_*``: 1 M varied lines (English words, ids, paths, JSON, some Chinese; 20 apps) written with
  ``store.write`` in batches; 50 different queries per kind: a word, a Chinese phrase, each without and
  with an app filter; p50/p99 of ``store.search`` (limit 100, newest first).

Every store is new: a SQLite file in a temporary directory, or a PostgreSQL database created for the case
and dropped after it. Everything goes to loopback. ``SHIPLINE_BENCH_LOGS=ingest,steady,search`` picks
harnesses (all by default; about five minutes on two cores).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.logs_files import CHINESE, WORDS, BenchContainers, app_name, message, write_logs
from shipline.config import PROJECT_ROOT, Settings
from shipline.logs.agent import Agent
from shipline.logs.postgres import PostgresStore
from shipline.logs.query import parse
from shipline.logs.records import LogRecord, Tags
from shipline.logs.sqlite import SqliteStore
from shipline.logs.store import LogStore, SearchRequest, Tokenizer
from shipline.stack.components import POSTGRES_USER

INGEST_CONTAINERS = 8
INGEST_BYTES = {1000: 16 * 2**20, 200: 8 * 2**20}
"""json-file bytes pre-written per case, by line size."""
STEADY_SECONDS, STEADY_CONTAINERS, STEADY_RATE = 20.0, 10, 100_000
SEARCH_LINES, SEARCH_BATCH, QUERIES = 1_000_000, 20_000, 50

StoreFactory = Callable[[], contextlib.AbstractContextManager[LogStore]]


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@contextlib.contextmanager
def _sqlite(tokenizer: Tokenizer) -> Iterator[LogStore]:
    with (
        tempfile.TemporaryDirectory(prefix="shipline-bench-logs-") as scratch,
        SqliteStore(Path(scratch) / "logs.db", tokenizer=tokenizer) as store,
    ):
        yield store


@contextlib.contextmanager
def _postgres(settings: Settings) -> Iterator[LogStore]:
    """A store in a new database owned by the log store's role, dropped afterwards."""
    name = f"logs_bench_{uuid.uuid4().hex[:12]}"
    admin = {"host": settings.host, "port": settings.postgres_port, "user": POSTGRES_USER, "autocommit": True}
    with psycopg.connect(dbname="postgres", **admin) as conn:  # type: ignore[arg-type]
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER shipline").format(sql.Identifier(name)))
    try:
        with PostgresStore(make_conninfo(settings.postgres_url, dbname=name)) as store:
            yield store
    finally:
        with psycopg.connect(dbname="postgres", **admin) as conn:  # type: ignore[arg-type]
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _stores(settings: Settings) -> dict[str, StoreFactory]:
    return {
        "sqlite_trigram": lambda: _sqlite("trigram"),
        "sqlite_unicode61": lambda: _sqlite("unicode61"),
        "postgres": lambda: _postgres(settings),
    }


# -- 1. ingest ---------------------------------------------------------------------------------------------


def _ingest(factory: StoreFactory, line_size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="shipline-bench-logs-") as scratch, factory() as store:
        directory = Path(scratch) / "containers"
        lines = write_logs(
            directory, containers=INGEST_CONTAINERS, total_bytes=INGEST_BYTES[line_size], line_size=line_size
        )
        size = sum(f.stat().st_size for f in directory.glob("*/*.log"))
        agent = Agent(store, BenchContainers(directory), sleep=lambda seconds: None, rescan_seconds=3600)
        agent.start()
        started, cpu = time.perf_counter(), time.process_time()
        drained = False
        while not drained:  # drained: two rounds in a row found nothing new
            drained = agent.step() == 0 and agent.step() == 0
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        stored = store.count()
        if stored != lines:
            raise RuntimeError(f"the agent stored {stored} of {lines} lines")
    return {"mib_s": size / 2**20 / elapsed, "lines_s": stored / elapsed, "cpu_percent": 100 * cpu / elapsed}


# -- 2. steady load ----------------------------------------------------------------------------------------


def _ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _steady(tokenizer: Tokenizer) -> dict[str, float]:
    python = sys.executable
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    with tempfile.TemporaryDirectory(prefix="shipline-bench-logs-") as scratch:
        directory, store_path = Path(scratch) / "containers", Path(scratch) / "store" / "logs.db"
        for index in range(STEADY_CONTAINERS):
            path = directory / f"c{index:02d}" / f"c{index:02d}-json.log"
            path.parent.mkdir(parents=True)
            path.touch()
        SqliteStore(store_path, tokenizer=tokenizer).close()
        agent = subprocess.Popen(
            [
                python,
                "-m",
                "bench.logs_files",
                "agent",
                str(directory),
                str(store_path),
                "--tokenizer",
                tokenizer,
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=PROJECT_ROOT,
        )
        try:
            assert agent.stdout is not None
            if agent.stdout.readline().strip() != "ready":
                raise RuntimeError("the agent process did not start")
            writer = subprocess.Popen(
                [
                    python,
                    "-m",
                    "bench.logs_files",
                    "write",
                    str(directory),
                    "--seconds",
                    str(STEADY_SECONDS),
                    "--containers",
                    str(STEADY_CONTAINERS),
                    "--rate",
                    str(STEADY_RATE),
                ],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
                cwd=PROJECT_ROOT,
            )
            delays = _poll_marks(store_path, writer, agent.pid)
            cpu = delays.pop("agent_cpu_percent")
            assert writer.stdout is not None
            marks = json.loads(writer.stdout.read())["marks"]
        finally:
            agent.terminate()
            agent.wait(timeout=30)
        found = list(delays.values())
    if len(found) < marks:
        raise RuntimeError(f"only {len(found)} of {marks} marker lines were stored")
    return {
        "agent_cpu_percent": cpu,
        "marks": len(found),
        "delay_p50_ms": 1000 * statistics.median(found),
        "delay_p99_ms": 1000 * _percentile(found, 0.99),
    }


def _poll_marks(store_path: Path, writer: subprocess.Popen[str], agent_pid: int) -> dict[str, float]:
    """Seconds from each marker's write to its row being readable, and ``agent_cpu_percent`` meanwhile."""
    delays: dict[str, float] = {}
    seq = 0
    ticks = _ticks(agent_pid)
    started = time.monotonic()
    ended: float | None = None
    cpu: float | None = None
    with SqliteStore(store_path) as reader:
        while ended is None or time.monotonic() - ended < 2.0:
            if ended is None and writer.poll() is not None:
                ended = time.monotonic()
                cpu = 100.0 * (_ticks(agent_pid) - ticks) / os.sysconf("SC_CLK_TCK") / (ended - started)
            now = time.time()
            for hit in reader.after(seq, limit=100_000):
                seq = hit.seq
                text = hit.record.message
                if text.startswith("benchmark-mark-"):
                    name, written = text.split(" ", 2)[:2]
                    delays[name] = now - float(written.removeprefix("written="))
            time.sleep(0.02)
    delays["agent_cpu_percent"] = cpu if cpu is not None else 0.0
    return delays


# -- 3. search ---------------------------------------------------------------------------------------------


def _fill(store: LogStore) -> None:
    """``SEARCH_LINES`` varied lines over the last hours, from 20 apps, in batches."""
    rng = random.Random(3)
    pool = [message(rng, rng.choice((40, 80, 120, 200))) for _ in range(20_000)]
    tags = [
        Tags(app=app_name(i), env="bench", release="1", port=20000 + i, container=f"c{i:02d}", host="h1")
        for i in range(20)
    ]
    start = datetime.now(UTC).replace(hour=0, minute=0, second=1, microsecond=0)
    step = min(timedelta(microseconds=50_000), (datetime.now(UTC) - start) / SEARCH_LINES)
    for first in range(0, SEARCH_LINES, SEARCH_BATCH):
        batch = [
            LogRecord(
                source=f"bench:{n % 20}",
                offset=n,
                time=start + step * n,
                stream="stdout",
                message=f"req={n:07d} {pool[rng.randrange(len(pool))]}",
                tags=tags[n % 20],
            )
            for n in range(first, first + SEARCH_BATCH)
        ]
        store.write(batch, [])


def _queries(rng: random.Random) -> dict[str, list[tuple[str, str | None]]]:
    words = rng.sample(WORDS, QUERIES)
    phrases = []
    for _ in range(QUERIES):
        text = rng.choice(CHINESE)
        length = rng.randint(2, len(text))
        begin = rng.randint(0, len(text) - length)
        phrases.append(text[begin : begin + length])
    apps = [app_name(rng.randrange(20)) for _ in range(QUERIES)]
    return {
        "word": [(w, None) for w in words],
        "word_app": list(zip(words, apps, strict=True)),
        "chinese": [(p, None) for p in phrases],
        "chinese_app": list(zip(phrases, reversed(apps), strict=True)),
    }


def _search(factory: StoreFactory) -> dict[str, float]:
    figures: dict[str, float] = {}
    with factory() as store:
        started = time.perf_counter()
        _fill(store)
        figures["build_s"] = time.perf_counter() - started
        for kind, queries in _queries(random.Random(5)).items():
            took: list[float] = []
            hits = 0
            for text, app in queries:
                request = SearchRequest(parse(text), app=app)
                begun = time.perf_counter()
                hits += len(store.search(request))
                took.append(time.perf_counter() - begun)
            figures |= {
                f"{kind}_p50_ms": 1000 * statistics.median(took),
                f"{kind}_p99_ms": 1000 * _percentile(took, 0.99),
                f"{kind}_mean_hits": hits / len(queries),
            }
    return figures


def _fts5_ceiling() -> dict[str, float]:
    """FTS5 alone: ~1 KiB lines inserted into an in-memory table in one transaction, no agent, no Python
    per line — the CPU bound of any agent that indexes into SQLite on one core."""
    rng = random.Random(7)
    lines = [message(rng, 1000) for _ in range(8000)]  # the same lines as the ingest harness writes
    size = sum(len(line.encode()) for line in lines) / 2**20
    figures: dict[str, float] = {}
    for name, tokenize in (
        ("trigram_nodetail", "tokenize='trigram', detail=none, columnsize=0"),
        ("trigram", "tokenize='trigram'"),
        ("unicode61", "tokenize='unicode61'"),
        ("no_index", ""),
    ):
        with sqlite3.connect(":memory:") as db:
            db.execute(
                f"CREATE VIRTUAL TABLE f USING fts5(message, {tokenize})"
                if tokenize
                else "CREATE TABLE f(message)"
            )
            cpu = time.process_time()
            db.executemany("INSERT INTO f(message) VALUES (?)", [(line,) for line in lines])
            figures[f"{name}_mib_s_cpu"] = size / (time.process_time() - cpu)
    return figures


def run(settings: Settings) -> dict[str, float]:
    """Ingest, steady-load CPU and delay, and search figures; see the module docstring for each harness."""
    figures: dict[str, float] = {}
    chosen = os.environ.get("SHIPLINE_BENCH_LOGS", "ingest,steady,search").split(",")
    stores = _stores(settings)
    if "ingest" in chosen:
        for key, value in _fts5_ceiling().items():
            figures[f"fts5_ceiling_{key}"] = value
        for name, factory in stores.items():
            for size in INGEST_BYTES:
                for key, value in _ingest(factory, size).items():
                    figures[f"ingest_{name}_{size}b_{key}"] = value
    if "steady" in chosen:
        for key, value in _steady("trigram").items():
            figures[f"steady_1mb_s_sqlite_trigram_{key}"] = value
    if "search" in chosen:
        for name, factory in stores.items():
            for key, value in _search(factory).items():
                figures[f"search_1m_{name}_{key}"] = value
    return figures
