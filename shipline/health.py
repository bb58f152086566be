"""Health polling of instances: ``GET http://ip:port{health_path}`` until it answers below 400.

One poller for the deploy (which waits for its new instances) and the registrator (which registers an
instance once it answers). Every URL still pending is asked at once in each round, and no request
outlives the deadline, so a few hanging health paths cost the timeout in all, not that much each.
"""

from __future__ import annotations

import asyncio

import httpx

ANSWER_TIMEOUT = 2.0


async def _ask(client: httpx.AsyncClient, url: str, timeout: float) -> str | None:
    """None when ``url`` answers below 400; else its answer (``HTTP 503``, ``ReadTimeout``)."""
    try:
        response = await client.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return type(exc).__name__
    return None if response.status_code < 400 else f"HTTP {response.status_code}"


async def poll_health(urls: list[str], *, timeout: float, interval: float = 0.25) -> dict[str, str]:
    """Poll every URL until each has answered below 400 once, or ``timeout`` seconds have passed.

    Returns:
        The URLs that never answered well, each with its last answer (``HTTP 503``, ``ConnectError``);
        empty when all are healthy.
    """
    pending = dict.fromkeys(urls, "not tried")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(trust_env=False) as client:
        while pending:
            budget = max(0.05, min(ANSWER_TIMEOUT, deadline - loop.time()))
            answers = await asyncio.gather(*(_ask(client, url, budget) for url in pending))
            for url, answer in zip(list(pending), answers, strict=True):
                if answer is None:
                    del pending[url]
                else:
                    pending[url] = answer
            if not pending or loop.time() >= deadline:
                break
            await asyncio.sleep(min(interval, max(0.0, deadline - loop.time())))
    return pending
