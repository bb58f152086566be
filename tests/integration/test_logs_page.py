"""The log page in a real browser: headless Chromium (Debian's package) driven by Playwright.

``shipline web``'s app is served by uvicorn on a free port of 127.0.0.1, in a thread of the test process,
over a SQLite store in the test's directory; the test writes into that store as the logs agent would.
The browser gets a fresh profile and may reach 127.0.0.1 only: any other request is refused and fails the
test (the page must load nothing from elsewhere). Without Chromium or Playwright the tests fail, naming
what to install; they are never skipped.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
import uvicorn

from shipline.logs.records import LogRecord, Tags
from shipline.logs.sqlite import SqliteStore
from shipline.programs import find_program
from tests.log_page import log_page_app
from tests.waiting import eventually

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Dialog, Page, Route

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

ORDERS = Tags(app="orders", env="pre", release="12", port=20011, container="4f2a9c1d8e7b6a5f4e3d", host="h1")
ORDERS_PROD = Tags(app="orders", env="prod", release="11", port=20021, container="9e8d7c6b5a4f", host="h2")
BILLING = Tags(app="billing", env="pre", release="3", port=20031, container="0a1b2c3d4e5f", host="h1")
SCRIPT = "<script>window.__pwned = 'script'</script> pwned"
IMAGE = "<img src=x onerror=\"window.__pwned = 'img'\"> pwned"


def record(
    tags: Tags,
    message: str,
    *,
    offset: int,
    stream: str = "stdout",
    fields: dict[str, object] | None = None,
    flags: frozenset[str] = frozenset(),
) -> LogRecord:
    return LogRecord(
        source="orders-1.log",
        offset=offset,
        time=datetime.now(UTC),
        stream=stream,
        message=message,
        tags=tags,
        fields=fields or {},
        flags=flags,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """The log store as the agent leaves it: lines of two apps, a Chinese one, two that look like markup."""
    store = SqliteStore(tmp_path / "logs.db")
    store.write(
        [
            record(ORDERS, "order 1842 accepted", offset=0),
            record(BILLING, "连接数据库失败: 超时 (db=billing)", offset=100, stream="stderr"),
            record(
                ORDERS,
                "连接数据库失败: 超时 (db=orders)",
                offset=200,
                stream="stderr",
                fields={"level": "error", "retry": 3},
                flags=frozenset({"truncated"}),
            ),
            record(ORDERS_PROD, "数据库 pool ready", offset=300),
            record(ORDERS, SCRIPT, offset=400),
            record(ORDERS, IMAGE, offset=500, fields={"msg": "<b>bold</b>"}),
        ],
        [],
    )
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def web_url(store: SqliteStore) -> Iterator[str]:
    """The base URL of ``shipline web`` serving the log page over ``store``'s database."""
    app = log_page_app(lambda: SqliteStore(store.path), ui_url="")
    # Port 0: the system picks a free port, read back from the listening socket (no race with others).
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="shipline-web", daemon=True)
    thread.start()
    eventually(lambda: server.started or not thread.is_alive(), what="uvicorn to listen")
    assert server.started, "uvicorn exited before listening"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@dataclass
class Browser:
    """Headless Chromium with its one context, and what it asked for outside 127.0.0.1 (refused)."""

    context: BrowserContext
    elsewhere: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Debian's Chromium, headless, with a fresh profile, allowed to reach 127.0.0.1 only (one per module:
    it takes seconds to start)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the Python package playwright is missing: pip install playwright (the test extra)")
    executable = find_program("chromium")
    if executable is None:
        pytest.fail("Chromium is missing: install the Debian package chromium (make system-deps)")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        browser = Browser(context)

        def loopback_only(route: Route) -> None:
            if urlsplit(route.request.url).hostname == "127.0.0.1":
                route.continue_()
            else:
                browser.elsewhere.append(route.request.url)
                route.abort()

        context.route("**/*", loopback_only)
        try:
            yield browser
        finally:
            context.close()


@pytest.fixture
def page(browser: Browser, web_url: str) -> Iterator[Page]:
    """The log page in a new tab; fails the test on a script error, a dialog (an injected ``alert``) or a
    request outside 127.0.0.1."""
    page = browser.context.new_page()
    troubles: list[str] = []
    page.on("pageerror", lambda error: troubles.append(f"script error: {error}"))

    def dialog_opened(dialog: Dialog) -> None:
        troubles.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", dialog_opened)
    browser.elsewhere.clear()
    page.goto(f"{web_url}/logs")
    yield page
    page.close()
    assert troubles == []
    assert browser.elsewhere == [], "the page requested something outside 127.0.0.1"


def search(page: Page, query: str, *, app: str = "") -> None:
    """Fill the form and search, as a user does (Enter in the query box)."""
    page.fill("#app", app)
    page.fill("#q", query)
    page.press("#q", "Enter")
    from playwright.sync_api import expect

    # The page says "Searching…" as the request leaves, "N hits in X ms" once it is answered.
    expect(page.locator("#status")).to_have_text(re.compile(r"^\d+ hits? in "), timeout=10_000)


def test_a_chinese_phrase_filtered_by_app_shows_its_rows_with_tags_and_marks(page: Page) -> None:
    search(page, "数据库")
    assert page.locator(".record").count() == 3, "three lines of every app hold 数据库"

    search(page, "数据库", app="orders")
    rows = page.locator(".record")
    assert rows.count() == 2
    assert page.inner_text("#status").startswith("2 hits in ")
    newest, oldest = rows.nth(0), rows.nth(1)
    assert newest.locator(".message").inner_text() == "数据库 pool ready"
    assert newest.locator(".tag-env").inner_text() == "prod"
    assert oldest.locator(".message").inner_text() == "连接数据库失败: 超时 (db=orders)"
    assert oldest.locator("mark").all_inner_texts() == ["数据库"]
    tags = {name: oldest.locator(f".tag-{name}").inner_text() for name in ("app", "env", "release", "port")}
    assert tags == {"app": "orders", "env": "pre", "release": "release 12", "port": ":20011"}
    assert oldest.locator(".tag-container").inner_text() == "4f2a9c1d8e7b"  # short; the full id on hover
    assert oldest.locator(".tag-container").get_attribute("title") == "container 4f2a9c1d8e7b6a5f4e3d"
    assert oldest.locator(".tag-host").inner_text() == "h1"
    assert oldest.locator(".tag-stream").inner_text() == "stderr"
    assert oldest.locator(".badge").all_inner_texts() == ["truncated"]
    assert oldest.locator(".field").all_inner_texts() == ["level=error", "retry=3"]
    assert "billing" not in page.inner_text("#results")
    assert "q=%E6%95%B0%E6%8D%AE%E5%BA%93" in page.url and "app=orders" in page.url


def test_a_query_that_cannot_be_read_shows_the_message_and_hint(page: Page) -> None:
    page.fill("#q", '"unclosed')
    page.press("#q", "Enter")
    error = page.locator("#error")
    error.wait_for(state="visible", timeout=10_000)
    assert "unclosed" in error.inner_text()
    assert error.locator(".hint").count() == 1


def test_log_lines_that_look_like_markup_are_shown_as_text_and_run_nothing(page: Page) -> None:
    search(page, "pwned", app="orders")

    assert page.locator(".record .message").all_inner_texts() == [IMAGE, SCRIPT]
    assert page.locator("#results img, #results script, #results b").count() == 0
    assert page.locator(".field").all_inner_texts() == ["msg=<b>bold</b>"]
    assert page.evaluate("window.__pwned") is None
    assert page.locator("mark").all_inner_texts() == ["pwned"] * 4  # in window.__pwned too


def test_live_tail_shows_a_new_line_of_the_app_within_seconds(page: Page, store: SqliteStore) -> None:
    from playwright.sync_api import expect

    search(page, "accepted", app="orders")
    page.check("#live")
    expect(page.locator("#live-status")).to_contain_text("waiting for new lines")
    time.sleep(1.5)  # the page has asked once from "now": what follows must come from the polling

    store.write([record(BILLING, "billing line, another app", offset=5000)], [])
    store.write([record(ORDERS, "order 1843 accepted <i>live</i>", offset=5100)], [])
    written = time.monotonic()
    newest = page.locator(".record").first.locator(".message")
    eventually(
        lambda: newest.inner_text() == "order 1843 accepted <i>live</i>",
        timeout=5,
        interval=0.1,
        what="the new line on top of the page",
    )
    arrived = time.monotonic() - written
    assert arrived < 3, f"the line took {arrived:.1f} s to show"
    assert "billing line" not in page.inner_text("#results")
    assert "1 new line" in page.inner_text("#live-status")
    assert page.locator(".record").nth(1).locator(".message").inner_text() == "order 1842 accepted"

    page.uncheck("#live")
    store.write([record(ORDERS, "after the tail stopped", offset=5200)], [])
    time.sleep(1.5)
    assert "after the tail stopped" not in page.inner_text("#results")


def test_a_screenshot_of_the_log_page(page: Page, tmp_path: Path) -> None:
    search(page, "数据库 OR order")
    shot = tmp_path / "logs-page.png"
    page.screenshot(path=str(shot), full_page=True)

    data = shot.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width == 1280 and height >= 300
    assert len(data) > 10_000, "a page with rows, not a blank image"
