"""``/logs`` of ``shipline web``: the page, its search and tail API (``shipline.web.logs``).

The app runs in-process over a real SQLite store in the test's directory, seeded with the log-store
contract's records; the webhook's collaborators are stubs that no test here reaches. Store faults come
from a store that raises, handed to the app in place of the real one.
"""

from __future__ import annotations

import asyncio
import re
import threading
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning

import shipline.web.logs as web_logs
from shipline.logs.records import LogRecord, Tags
from shipline.logs.sqlite import SqliteStore
from shipline.logs.store import LogStore, LogStoreError, SearchRequest
from shipline.web.logs import LogStoreSource, StoreThreads
from tests.log_page import log_page_app
from tests.log_store_contract import API, MESSAGES, NOW, WEB, records

with warnings.catch_warnings():
    # As in test_webhook: Starlette 1.x prefers httpx2 for its TestClient; the pinned httpx still works.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

DB = "20251125.db"


def web(logs: LogStoreSource | None) -> Starlette:
    return log_page_app(logs)


class Opened:
    """A store source that opens SQLite stores on one file and remembers each store it opened."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stores: list[SqliteStore] = []

    def __call__(self) -> LogStore:
        store = SqliteStore(self.path)
        self.stores.append(store)
        return store


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SqliteStore]:
    """The store as the agent writes it, seeded with the contract's six records."""
    store = SqliteStore(tmp_path / DB)
    try:
        store.write(records(), [])
        yield store
    finally:
        store.close()


@pytest.fixture
def opened(db: SqliteStore) -> Opened:
    return Opened(db.path)


@pytest.fixture
def client(opened: Opened) -> Iterator[TestClient]:
    with TestClient(web(opened)) as test_client:
        yield test_client


def search(client: TestClient, **params: Any) -> httpx.Response:
    return client.get("/logs/api/search", params=params)


def messages(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [hit["message"] for hit in response.json()["hits"]]


def line(message: str, *, tags: Tags = WEB, source: str = "f2", offset: int = 0) -> LogRecord:
    return LogRecord(
        source=source, offset=offset, time=datetime.now(UTC), stream="stdout", message=message, tags=tags
    )


# --- the page -----------------------------------------------------------------------------------------


def test_the_page_is_one_self_contained_document(client: TestClient) -> None:
    """The page carries its own style and script (with the CSP's nonce) and links to nothing outside."""
    response = client.get("/logs")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    nonce = re.search(r"script-src 'nonce-([^']+)'", policy)
    assert nonce is not None
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    page = response.text
    assert page.count("<script") == 1 and f'<script nonce="{nonce.group(1)}">' in page
    assert f'<style nonce="{nonce.group(1)}">' in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page), "the page must fetch nothing from elsewhere"
    for control in ('id="q"', 'id="app"', 'id="env"', 'id="since"', 'id="live"'):
        assert control in page
    assert "innerHTML" not in page and "insertAdjacentHTML" not in page and "outerHTML" not in page
    assert client.get("/logs").headers["content-security-policy"] != policy, "a fresh nonce per page"


def test_the_page_takes_its_search_from_the_address_escaped(client: TestClient) -> None:
    """``/logs?q=…&app=…&since=…`` fills the form; what it carries is text, never markup."""
    page = client.get(
        "/logs", params={"q": '"><script>alert(1)</script>', "app": "web", "since": "2025-11-25T14:00:00Z"}
    ).text

    assert "<script>alert(1)</script>" not in page
    assert 'value="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in page
    assert 'id="app" name="app" value="web"' in page
    assert '<option value="custom" selected>' in page
    assert 'value="2025-11-25T14:00:00Z"' in page


def test_without_a_log_store_there_is_no_log_page() -> None:
    with TestClient(web(None)) as client:
        assert client.get("/logs").status_code == 404
        assert client.get("/healthz").text == "ok"


# --- search -------------------------------------------------------------------------------------------


def test_search_answers_matching_records_newest_first_with_their_tags(client: TestClient) -> None:
    response = search(client, q="ms OR ok")

    assert messages(response) == ["ok", "WARN slow query took 900ms", "GET /api/v1/users 200 in 12ms"]
    body = response.json()
    assert isinstance(body["took_ms"], float | int) and body["took_ms"] >= 0
    oldest = body["hits"][-1]
    assert {k: oldest[k] for k in ("app", "env", "release", "port", "container", "host", "stream")} == {
        "app": "web",
        "env": "pre",
        "release": "7",
        "port": 20001,
        "container": "c-web",
        "host": "h1",
        "stream": "stdout",
    }
    assert oldest["fields"] == {"level": "info", "n": 0}
    assert oldest["time"] == NOW.isoformat().replace("+00:00", "Z")
    [flagged] = search(client, q="数据库").json()["hits"]
    assert flagged["flags"] == ["truncated"]


def test_search_filters_by_app_and_env(client: TestClient) -> None:
    assert messages(search(client, q="ms", app="web")) == ["GET /api/v1/users 200 in 12ms"]
    assert messages(search(client, q="ms", app="api", env="prod")) == ["WARN slow query took 900ms"]
    assert messages(search(client, q="ms", app="api", env="pre")) == []
    assert messages(search(client, q="ms", app="", env="")) == [
        "WARN slow query took 900ms",
        "GET /api/v1/users 200 in 12ms",
    ], "an empty filter is no filter"


def test_search_filters_by_time(client: TestClient, db: SqliteStore) -> None:
    db.write(records([(API, "ERROR timeout long ago")], source="old", start=NOW - timedelta(days=3)), [])

    assert messages(search(client, q="timeout")) == [
        "ERROR timeout talking to payments",
        "ERROR timeout long ago",
    ]
    assert messages(search(client, q="timeout", since="1h")) == ["ERROR timeout talking to payments"]
    assert messages(search(client, q="timeout", since="7d", until="2d")) == ["ERROR timeout long ago"]
    before = (NOW - timedelta(days=1)).isoformat()
    assert messages(search(client, q="timeout", until=before)) == ["ERROR timeout long ago"]


def test_search_highlights_the_words_that_match(client: TestClient) -> None:
    [chinese] = search(client, q="数据库").json()["hits"]
    assert chinese["highlight"] == [["连接", False], ["数据库", True], ["失败: 超时 (db=orders)", False]]

    [upper] = search(client, q="TIMEOUT").json()["hits"]
    assert upper["highlight"] == [["ERROR ", False], ["timeout", True], [" talking to payments", False]]

    [phrase] = search(client, q='"hello world" OR nothing').json()["hits"]
    assert phrase["highlight"] == [['user said "', False], ["hello world", True], ['" twice', False]]

    [excluded] = search(client, q="ms -slow").json()["hits"]
    assert excluded["highlight"] == [["GET /api/v1/users 200 in 12", False], ["ms", True]]
    for hit in search(client, q="ms OR ok").json()["hits"]:
        assert "".join(text for text, _ in hit["highlight"]) == hit["message"]


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("", "empty query"),
        ("   ", "empty query"),
        ('"unclosed', "unclosed"),
        ("(db OR cache", "("),
        ("-debug", "only excludes"),
        ("error OR", "OR"),
    ],
)
def test_a_query_that_cannot_be_read_is_400_with_its_message(
    client: TestClient, query: str, error: str
) -> None:
    response = search(client, q=query)

    assert response.status_code == 400
    body = response.json()
    assert error in body["error"]
    assert set(body) == {"error", "hint"}


def test_a_missing_query_is_400(client: TestClient) -> None:
    response = client.get("/logs/api/search")
    assert response.status_code == 400
    assert response.json()["error"] == "empty query"
    assert response.json()["hint"]


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"since": "yesterday"}, "'yesterday' is neither a duration nor a time"),
        ({"until": "1 hour"}, "'1 hour' is neither a duration nor a time"),
        ({"since": "1h", "until": "2h"}, "since='1h' is later than until='2h'"),
    ],
)
def test_a_time_that_cannot_be_read_is_400_with_a_hint(
    client: TestClient, params: dict[str, str], error: str
) -> None:
    response = search(client, q="ms", **params)

    assert response.status_code == 400
    assert response.json()["error"] == error
    assert response.json()["hint"]


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "abc", "1.5"])
def test_a_limit_outside_1_to_1000_is_400(client: TestClient, limit: str) -> None:
    response = search(client, q="line", limit=limit)

    assert response.status_code == 400
    assert response.json()["error"] == f"limit={limit!r} is not a whole number from 1 to 1000"


def test_the_limit_caps_the_hits_up_to_1000(client: TestClient, db: SqliteStore) -> None:
    db.write(records([(WEB, f"line {i}") for i in range(1100)], source="many"), [])

    assert messages(search(client, q="line", limit="1")) == ["line 1099"]
    assert len(messages(search(client, q="line"))) == 100
    assert len(messages(search(client, q="line", limit="1000"))) == 1000


class FailingStore(SqliteStore):
    """A store whose every read fails as a locked or vanished database does."""

    def search(self, request: SearchRequest) -> list[Any]:
        raise LogStoreError("SQLite log store: could not read: database is locked", hint="the agent retries")

    def last_seq(self) -> int:
        raise LogStoreError("SQLite log store: could not read: disk I/O error", hint="check the disk")


def test_a_store_that_fails_is_503_with_its_message(tmp_path: Path) -> None:
    with TestClient(web(lambda: FailingStore(tmp_path / DB))) as client:
        response = search(client, q="ms")
        assert response.status_code == 503
        assert response.json() == {
            "error": "SQLite log store: could not read: database is locked",
            "hint": "the agent retries",
        }
        tail = client.get("/logs/api/tail", params={"app": "web"})
        assert tail.status_code == 503
        assert tail.json()["error"] == "SQLite log store: could not read: disk I/O error"


def test_a_store_that_cannot_be_opened_is_503_and_is_opened_again_next_time(
    tmp_path: Path, db: SqliteStore
) -> None:
    attempts: list[int] = []

    def source() -> LogStore:
        attempts.append(1)
        if len(attempts) == 1:
            raise LogStoreError("PostgreSQL log store: cannot connect to 127.0.0.1:5432", hint="start it")
        return SqliteStore(db.path)

    with TestClient(web(source)) as client:
        first = search(client, q="ms")
        assert first.status_code == 503
        assert first.json()["error"] == "PostgreSQL log store: cannot connect to 127.0.0.1:5432"
        assert messages(search(client, q="ms", app="web")) == ["GET /api/v1/users 200 in 12ms"]
    assert len(attempts) == 2


async def test_a_failed_call_drops_that_threads_store_and_the_next_opens_another(tmp_path: Path) -> None:
    """A store that failed (a dropped connection) is closed; the thread opens a fresh one next time."""
    opened: list[LogStore] = []

    def source() -> LogStore:
        store = FailingStore(tmp_path / DB) if not opened else SqliteStore(tmp_path / DB)
        opened.append(store)
        return store

    threads = StoreThreads(source, threads=1)
    try:
        with pytest.raises(LogStoreError, match="disk I/O error"):
            await threads.run(lambda store: store.last_seq())
        assert await threads.run(lambda store: store.last_seq()) == 0
        assert await threads.run(lambda store: store.count()) == 0
    finally:
        await asyncio.to_thread(threads.close)
    assert len(opened) == 2
    for store in opened:
        with pytest.raises(Exception, match="closed"):
            store.count()


# --- tail ---------------------------------------------------------------------------------------------


def test_tail_without_after_starts_now(client: TestClient, db: SqliteStore) -> None:
    """No records, only where "now" is: a tail shows what arrives from then on."""
    assert client.get("/logs/api/tail", params={"app": "web"}).json() == {
        "records": [],
        "last_seq": db.last_seq(),
    }
    assert db.last_seq() == len(MESSAGES)


def test_tail_after_a_seq_answers_newer_records_of_the_app_oldest_first(
    client: TestClient, db: SqliteStore
) -> None:
    start = client.get("/logs/api/tail", params={"app": "web", "env": "pre"}).json()["last_seq"]
    db.write([line("first"), line("other app", tags=API, offset=1), line("second", offset=2)], [])

    body = client.get("/logs/api/tail", params={"app": "web", "env": "pre", "after": start}).json()

    assert [r["message"] for r in body["records"]] == ["first", "second"]
    assert [r["app"] for r in body["records"]] == ["web", "web"]
    assert body["records"][0]["seq"] < body["records"][1]["seq"]
    assert body["last_seq"] == db.last_seq() == start + 3
    again = client.get("/logs/api/tail", params={"app": "web", "env": "pre", "after": body["last_seq"]})
    assert again.json() == {"records": [], "last_seq": body["last_seq"]}
    everything = client.get("/logs/api/tail", params={"after": start}).json()
    assert [r["message"] for r in everything["records"]] == ["first", "other app", "second"]


def test_tail_gives_a_long_backlog_in_batches_without_skipping(
    client: TestClient, db: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_logs, "TAIL_BATCH", 2)
    start = db.last_seq()
    db.write([line(f"n{i}", offset=i) for i in range(5)], [])

    seen: list[str] = []
    after = start
    for _ in range(4):
        body = client.get("/logs/api/tail", params={"app": "web", "after": after}).json()
        seen += [r["message"] for r in body["records"]]
        after = body["last_seq"]
    assert seen == ["n0", "n1", "n2", "n3", "n4"]
    assert after == db.last_seq()


@pytest.mark.parametrize("after", ["-1", "x", "1e3"])
def test_tail_after_something_not_a_seq_is_400(client: TestClient, after: str) -> None:
    response = client.get("/logs/api/tail", params={"after": after})
    assert response.status_code == 400
    assert "after=" in response.json()["error"]


# --- how the store is reached -------------------------------------------------------------------------


async def test_a_slow_search_does_not_hold_up_other_requests(tmp_path: Path) -> None:
    """Store calls run on threads: while one search waits on the database, the event loop serves on."""
    release = threading.Event()
    entered = threading.Event()

    class SlowStore(SqliteStore):
        def search(self, request: SearchRequest) -> list[Any]:
            entered.set()
            release.wait(10)
            return super().search(request)

    app = web(lambda: SlowStore(tmp_path / DB))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        slow = asyncio.create_task(client.get("/logs/api/search", params={"q": "ms"}))
        await asyncio.to_thread(entered.wait, 10)
        async with asyncio.timeout(2):
            assert (await client.get("/healthz")).text == "ok"
            assert (await client.get("/logs")).status_code == 200
        assert not slow.done()
        release.set()
        assert (await slow).status_code == 200


def test_the_stores_are_closed_when_the_app_shuts_down(opened: Opened) -> None:
    with TestClient(web(opened)) as client:
        assert messages(search(client, q="ok")) == ["ok", "WARN slow query took 900ms"]
        assert opened.stores
    for store in opened.stores:
        with pytest.raises(Exception, match="closed"):
            store.count()
