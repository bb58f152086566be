"""A PROD rolling update under steady load through nginx: every request counted, failures reported."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx

from shipline.config import Settings
from shipline.etcd_client import connect
from shipline.flow_runs import run_deployment_and_wait
from shipline.release.history import ReleaseStatus, list_releases
from shipline.release.lifecycle import release_deployment

APP, ENV, RATE = "hello-python", "prod", 60  # requests per second, above the goal's 50


async def _load(url: str, host: str, stop: threading.Event, counts: dict[str, int]) -> None:
    async with httpx.AsyncClient(timeout=5.0) as client:
        interval, next_at = 1 / RATE, time.monotonic()

        async def one() -> None:
            try:
                response = await client.get(url, headers={"Host": host})
                counts["ok" if response.status_code == 200 else "failed"] += 1
            except httpx.HTTPError:
                counts["failed"] += 1

        tasks = []
        while not stop.is_set():
            tasks.append(asyncio.create_task(one()))
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await asyncio.gather(*tasks)


def run(settings: Settings) -> dict[str, float]:
    """Replay the live PROD release of the sample (same digest, new instances) under load through nginx."""

    async def live_request() -> dict[str, object]:
        async with connect(settings.etcd_url) as client:
            live = [r for r in await list_releases(client, APP, ENV) if r.status is ReleaseStatus.LIVE]
        if not live or not live[-1].request:
            raise SystemExit(f"no live release of {APP} in {ENV}: run `make demo` first")
        return live[-1].request

    request = asyncio.run(live_request())
    counts = {"ok": 0, "failed": 0}
    stop = threading.Event()
    loader = threading.Thread(
        target=lambda: asyncio.run(
            _load(f"{settings.nginx_url}/version", f"{APP}.{ENV}.localhost", stop, counts)
        )
    )
    loader.start()
    time.sleep(2)  # steady load before the update
    started = time.monotonic()
    flow_run = run_deployment_and_wait(release_deployment(ENV), parameters={"request": request}, timeout=600)
    seconds = time.monotonic() - started
    time.sleep(2)  # and after it
    stop.set()
    loader.join()
    assert flow_run.state is not None and flow_run.state.is_completed(), flow_run.state
    return {
        "rolling_update_seconds": seconds,
        "requests": counts["ok"] + counts["failed"],
        "failed_requests": counts["failed"],
        "requests_per_second": RATE,
    }
