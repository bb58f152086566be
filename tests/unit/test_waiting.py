"""The polling every stack test waits with: the first truthy answer, or a failure naming what was awaited."""

import asyncio
import time

import pytest

from tests.waiting import eventually, eventually_async


def test_returns_the_first_truthy_answer() -> None:
    answers = iter([None, 0, [], ["key"], ["later"]])
    assert eventually(lambda: next(answers), interval=0.001) == ["key"]


def test_fails_naming_what_was_awaited_and_the_last_answer() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"waited 0\.1 s for the key in etcd; last seen: \[\]"):
        eventually(lambda: [], timeout=0.1, interval=0.01, what="the key in etcd")


def test_the_last_check_runs_at_or_after_the_deadline() -> None:
    checked: list[float] = []
    start = time.monotonic()
    with pytest.raises(pytest.fail.Exception):
        eventually(lambda: checked.append(time.monotonic()), timeout=0.2, interval=0.07)
    assert checked[-1] - start >= 0.2


async def test_the_async_twin_lets_the_loop_run_between_checks() -> None:
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.001)

    async def three_ticks() -> int:
        return len(ticks) if len(ticks) >= 3 else 0

    ticker = asyncio.create_task(tick())
    try:
        assert await eventually_async(three_ticks, timeout=5, interval=0.01) >= 3
    finally:
        ticker.cancel()

    async def never() -> bool:
        return False

    with pytest.raises(pytest.fail.Exception, match=r"waited 0\.05 s for nothing; last seen: False"):
        await eventually_async(never, timeout=0.05, what="nothing")
