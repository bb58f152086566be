"""Waiting for what the code under test reaches in its own time: poll a check until it holds, or fail.

Daemons, containers and servers answer after a while. A fixed sleep before an assertion is either too
short on a loaded machine or needlessly long everywhere else; these poll instead, up to a timeout, and a
timeout fails the test with what was awaited and the last value the check returned.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
import pytest

T = TypeVar("T")


def eventually(
    check: Callable[[], T | None],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "the condition",
) -> T:
    """Call ``check`` until it returns a truthy value, and return that value.

    ``check`` runs at least once, and its last run starts at or after the deadline: a slow check is never
    cut short. Falsy values mean "not yet", so to await an empty list or a zero, pass a predicate that
    compares with it.

    Args:
        check: Reads the state once; returns a truthy value once the state is the awaited one (a
            predicate that compares with the expected value, or the value itself).
        timeout: Seconds to keep trying.
        interval: Seconds between two calls.
        what: What is awaited, as the failure message names it ("the key of 127.0.0.1:8080 in etcd").

    Returns:
        The first truthy value ``check`` returned.

    Raises:
        pytest.fail.Exception: ``check`` returned nothing truthy within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        seen = check()
        if seen:
            return seen
        if time.monotonic() >= deadline:
            pytest.fail(f"waited {timeout:g} s for {what}; last seen: {seen!r}")
        time.sleep(interval)


async def eventually_async(
    check: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "the condition",
) -> T:
    """Await ``check()`` until it returns a truthy value, and return that value.

    The twin of ``eventually`` for a check that must run on the event loop, or a state that tasks on
    the loop change: the pause between calls is ``asyncio.sleep``, so those tasks keep running.

    Args:
        check: An async callable that reads the state once; returns a truthy value once the state is the
            awaited one.
        timeout: Seconds to keep trying.
        interval: Seconds between two calls.
        what: What is awaited, as the failure message names it.

    Returns:
        The first truthy value ``check`` returned.

    Raises:
        pytest.fail.Exception: ``check`` returned nothing truthy within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        seen = await check()
        if seen:
            return seen
        if time.monotonic() >= deadline:
            pytest.fail(f"waited {timeout:g} s for {what}; last seen: {seen!r}")
        await asyncio.sleep(interval)


def as_the_ui(url: str, body: dict[str, object], *, attempts: int = 5) -> httpx.Response:
    """POST what a Prefect UI button sends, with the credential and CSRF token a logged-in UI sends. A 503
    (the server's SQLite busy under the suite's load) is what the operator sees and presses again on — and
    what Prefect's own client retries."""
    from shipline.config import load_settings
    from shipline.prefect_auth import prefect_auth

    auth = prefect_auth(load_settings())
    for attempt in range(attempts):
        response = httpx.post(
            url, json=body, timeout=10, auth=auth, headers={"Origin": load_settings().prefect_url}
        )
        if response.status_code != 503 or attempt == attempts - 1:
            return response
        time.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable: the last attempt returns")
