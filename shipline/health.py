"""Health polling of instances: ``GET http://ip:port{health_path}`` until it answers below 400.

One poller for the deploy (which waits for its new instances) and the registrator (which registers an
instance once it answers).
"""

from __future__ import annotations

import asyncio

import httpx

ANSWER_TIMEOUT = 2.0


async def poll_health(urls: list[str], *, timeout: float, interval: float = 0.25) -> dict[str, str]:
    """Poll every URL until each has answered below 400 once, or ``timeout`` seconds have passed.

    Returns:
        The URLs that never answered well, each with its last answer (``HTTP 503``, ``ConnectError``);
        empty when all are healthy.
    """
    pending = dict.fromkeys(urls, "not tried")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(timeout=ANSWER_TIMEOUT, trust_env=False) as client:
        while True:
            for url in list(pending):
                try:
                    response = await client.get(url)
                except httpx.HTTPError as exc:
                    pending[url] = type(exc).__name__
                    continue
                if response.status_code < 400:
                    del pending[url]
                else:
                    pending[url] = f"HTTP {response.status_code}"
            if not pending or loop.time() > deadline:
                return pending
            await asyncio.sleep(interval)
