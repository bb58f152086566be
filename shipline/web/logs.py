"""``/logs`` on ``shipline web``: the log search page and the JSON it reads (shared/DESIGN.md §1).

- ``GET /logs``: one self-contained page (``templates/web/logs.html.j2``: inline style and script, nothing
  fetched from anywhere else); ``?q=&app=&env=&since=&until=`` fill its form and run that search at once,
  so a link to a search can be shared.
- ``GET /logs/api/search?q=&app=&env=&since=&until=&limit=`` → ``{"hits": [...], "took_ms": n}``, newest
  first, each hit a record's JSON with ``highlight``: its message cut into ``[text, matched]`` pieces.
- ``GET /logs/api/tail?app=&env=&after=SEQ`` → ``{"records": [...], "last_seq": n}``, oldest first: what
  was stored after ``SEQ``. Without ``after``, no records and the newest ``seq``: a tail starts at "now".

A query, time or limit that cannot be read answers 400 with ``{"error", "hint"}``; a store that fails
(``LogStoreError``) answers 503 the same way. Log lines are untrusted text: the page's script puts them
into the document as text nodes only, and its Content-Security-Policy runs no script but its own.

Store calls block (SQLite, psycopg), so they run on a few threads of their own, never on the event loop.
A store holds one connection, which is not shared between threads: each thread opens its own on first
use and keeps it, and drops it after a failure so that the next call opens a fresh one (PostgreSQL came
back, the database file was replaced). A dedicated pool rather than ``asyncio.to_thread``: its threads
live as long as the app, so each connection is opened once and closed at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from shipline.config import PROJECT_ROOT
from shipline.errors import ConfigError
from shipline.logs.query import highlight, parse, positive_terms
from shipline.logs.records import StoredRecord
from shipline.logs.store import DEFAULT_LIMIT, LogStore, LogStoreError, SearchRequest, parse_moment

LogStoreSource = Callable[[], LogStore]
"""Opens a log store (``lambda: open_store(settings)``); raises ``LogStoreError`` when it cannot."""

T = TypeVar("T")

MAX_HITS = 1000
"""At most this many hits per search: a page of results, not an export (``shipline logs search --json``)."""
TAIL_BATCH = 500
"""At most this many records per tail answer; the page asks again from the last one it got."""
SINCE_CHOICES = ("15m", "1h", "24h", "7d")
DEFAULT_SINCE = "24h"

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(PROJECT_ROOT / "templates" / "web"),
    undefined=jinja2.StrictUndefined,
    autoescape=True,
    keep_trailing_newline=True,
)


class StoreThreads:
    """Runs calls on a log store off the event loop: on ``threads`` threads, each with its own store.

    Args:
        source: Opens a store; called on a thread's first call, and again after a call failed.
        threads: How many store calls run at once (and how many connections are held).
    """

    def __init__(self, source: LogStoreSource, *, threads: int = 4) -> None:
        self.source = source
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="shipline-logs")
        self._local = threading.local()
        self._open: set[LogStore] = set()
        self._lock = threading.Lock()

    async def run(self, call: Callable[[LogStore], T]) -> T:
        """``call(store)`` on one of the threads, with that thread's store.

        Raises:
            LogStoreError: the store could not be opened, or the call failed.
        """
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, call)

    def _call(self, call: Callable[[LogStore], T]) -> T:
        store: LogStore | None = getattr(self._local, "store", None)
        if store is None:
            store = self.source()
            self._local.store = store
            with self._lock:
                self._open.add(store)
        try:
            return call(store)
        except LogStoreError:
            self._local.store = None
            self._forget(store)
            raise

    def _forget(self, store: LogStore) -> None:
        with self._lock:
            self._open.discard(store)
        # The connection may be broken already: closing it is a courtesy, the next call opens another.
        with contextlib.suppress(Exception):
            store.close()

    def close(self) -> None:
        """Wait for the calls under way, then close every store."""
        self._executor.shutdown(wait=True)
        with self._lock:
            stores, self._open = list(self._open), set()
        for store in stores:
            store.close()


def _text(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name, "").strip()
    return value or None


def _int(params: Mapping[str, str], name: str, *, default: int, low: int, high: int) -> int:
    text = _text(params, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(f"{name}={text!r} is not a whole number from {low} to {high}")
    return value


def search_request(params: Mapping[str, str]) -> SearchRequest:
    """The search that ``/logs/api/search``'s query string asks for.

    Raises:
        ConfigError: a query, time or limit that cannot be read (``QueryError`` for the query).
    """
    query = parse(params.get("q", ""))
    since_text, until_text = _text(params, "since"), _text(params, "until")
    since = parse_moment(since_text) if since_text else None
    until = parse_moment(until_text) if until_text else None
    if since and until and since > until:
        raise ConfigError(
            f"since={since_text!r} is later than until={until_text!r}", hint="swap them, or leave out until"
        )
    return SearchRequest(
        query=query,
        app=_text(params, "app"),
        env=_text(params, "env"),
        since=since,
        until=until,
        limit=_int(params, "limit", default=DEFAULT_LIMIT, low=1, high=MAX_HITS),
    )


def hit_json(hit: StoredRecord, words: list[str]) -> dict[str, Any]:
    """A search hit as the page reads it: the record's JSON and where its message matches."""
    pieces = highlight(hit.record.message, words)
    return {**hit.as_json(), "highlight": [[text, matched] for text, matched in pieces]}


def _refused(status: int, exc: ConfigError | LogStoreError) -> JSONResponse:
    return JSONResponse({"error": exc.message, "hint": exc.hint}, status_code=status)


class LogPage:
    """The routes of the log page, reading the store that ``source`` opens.

    Args:
        source: Opens a log store (one per thread, see ``StoreThreads``).
        threads: How many store calls run at once.
    """

    def __init__(self, source: LogStoreSource, *, threads: int = 4) -> None:
        self.stores = StoreThreads(source, threads=threads)

    def routes(self) -> list[BaseRoute]:
        """``/logs`` and its API."""
        return [
            Route("/logs", self.page, methods=["GET"]),
            Route("/logs/api/search", self.search, methods=["GET"]),
            Route("/logs/api/tail", self.tail, methods=["GET"]),
        ]

    def close(self) -> None:
        """Close the stores (at shutdown)."""
        self.stores.close()

    async def page(self, request: Request) -> Response:
        params = request.query_params
        since = params.get("since", DEFAULT_SINCE).strip()
        nonce = secrets.token_urlsafe(16)
        html = _templates.get_template("logs.html.j2").render(
            q=params.get("q", ""),
            app=params.get("app", ""),
            env=params.get("env", ""),
            since=since,
            until=params.get("until", ""),
            since_choices=SINCE_CHOICES,
            custom=since not in (*SINCE_CHOICES, ""),
            search_limit=DEFAULT_LIMIT,
            tail_batch=TAIL_BATCH,
            nonce=nonce,
        )
        return HTMLResponse(
            html,
            headers={
                # Only the page's own script and style run, and it talks only to this service: a log
                # line that slipped into the markup could still do nothing.
                "Content-Security-Policy": (
                    f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
                    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'self'; "
                    "frame-ancestors 'none'"
                ),
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-store",
            },
        )

    async def search(self, request: Request) -> Response:
        try:
            wanted = search_request(request.query_params)
        except ConfigError as exc:  # QueryError among them
            return _refused(400, exc)
        started = time.perf_counter()
        try:
            hits = await self.stores.run(lambda store: store.search(wanted))
        except LogStoreError as exc:
            return _refused(503, exc)
        took_ms = round((time.perf_counter() - started) * 1000, 1)
        words = positive_terms(wanted.query)
        return JSONResponse({"hits": [hit_json(hit, words) for hit in hits], "took_ms": took_ms})

    async def tail(self, request: Request) -> Response:
        params = request.query_params
        app, env = _text(params, "app"), _text(params, "env")
        try:
            after = _int(params, "after", default=-1, low=0, high=2**63 - 1)
        except ConfigError as exc:
            return _refused(400, exc)

        def read(store: LogStore) -> tuple[list[StoredRecord], int]:
            # The newest seq is read first: every record up to it is committed by then, so the records
            # read next include all of them (of this app), and the page may go on from there.
            newest = store.last_seq()
            if after < 0:
                return [], newest
            records = store.after(after, app=app, env=env, limit=TAIL_BATCH)
            if len(records) == TAIL_BATCH:  # more to come: go on from the last one given
                return records, records[-1].seq
            return records, max([newest, *(r.seq for r in records)])

        try:
            records, last_seq = await self.stores.run(read)
        except LogStoreError as exc:
            return _refused(503, exc)
        return JSONResponse({"records": [r.as_json() for r in records], "last_seq": last_seq})
