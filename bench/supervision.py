"""Supervised daemons of the running stack under load: ``kill -9`` of the registrator, discover and a
worker while 50 requests a second (a new connection each, as curl makes them) go through nginx to an app
with two instances.

Figures per daemon: requests sent and failed during the kill and the TTL that follows it, the time from
the kill until the supervisor has started it again, and until it answers as itself (its ``up`` probe).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import httpx

from bench.routing import Gateway
from shipline.config import Settings
from shipline.docker import docker_client
from shipline.stack.lifecycle import State, all_components, component_status
from shipline.stack.processes import ProcessTable
from shipline.stack.supervise import read_supervision
from tests.images import busybox_web_image, free_ports, run_instance

RATE = 50
# After the kill, longer than a registrator's lease (10 s): keys it held must have been taken over by then.
HOLD = {"registrator": 14.0, "discover": 5.0, "worker-pre": 5.0}


def _load(settings: Settings, host: str, stop: threading.Event, outcomes: dict[str, int]) -> None:
    no_reuse = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(timeout=5, limits=no_reuse, trust_env=False) as client:
        next_at = time.monotonic()
        while not stop.is_set():
            try:
                ok = client.get(settings.nginx_url, headers={"Host": host}).status_code == 200
            except httpx.HTTPError:
                ok = False
            outcomes["sent"] += 1
            outcomes["failed"] += 0 if ok else 1
            next_at += 1 / RATE
            time.sleep(max(0.0, next_at - time.monotonic()))


def _kill(settings: Settings, name: str) -> dict[str, float]:
    state = read_supervision(settings.run_dir, name)
    if state is None or state.pid is None:
        raise RuntimeError(f"{name} is not supervised: restart the stack (shipline down; shipline up)")
    component = next(c for c in all_components(settings) if c.name == name)
    table = ProcessTable(settings.run_dir)
    killed_at = time.monotonic()
    os.kill(state.pid, signal.SIGKILL)
    restarted = answering = float("nan")
    while time.monotonic() - killed_at < 60:
        now = read_supervision(settings.run_dir, name)
        if restarted != restarted and now is not None and now.pid not in (None, state.pid):  # NaN: not yet
            restarted = time.monotonic() - killed_at
        if restarted == restarted and component_status(component, table).state is State.UP:
            answering = time.monotonic() - killed_at
            break
        time.sleep(0.01)
    return {"restarted_s": restarted, "answering_s": answering}


def run(settings: Settings) -> dict[str, float]:
    client = docker_client(settings.docker_url)
    app = f"benchkill-{os.getpid()}"
    repository = f"{settings.registry_address}/apps/benchkill"
    digest = busybox_web_image(client, repository, "v1", {"healthz": "ok", "index.html": "up"})
    image = f"{repository}@{digest}"
    figures: dict[str, float] = {}
    containers = [run_instance(client, image, app=app, env="pre", port=port) for port in free_ports(2)]
    host = f"{app}.pre.localhost"
    try:
        deadline = time.monotonic() + 30
        while httpx.get(settings.nginx_url, headers={"Host": host}, trust_env=False).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{app} is not served through nginx")
            time.sleep(0.1)
        for name, hold in HOLD.items():
            outcomes = {"sent": 0, "failed": 0}
            stop = threading.Event()
            loader = threading.Thread(target=_load, args=(settings, host, stop, outcomes))
            loader.start()
            try:
                time.sleep(1)
                times = _kill(settings, name)
                time.sleep(max(0.0, hold - times["answering_s"]))
            finally:
                stop.set()
                loader.join()
            figures |= {
                f"kill9_{name}_requests": float(outcomes["sent"]),
                f"kill9_{name}_failed": float(outcomes["failed"]),
                f"kill9_{name}_restarted_ms": 1000 * times["restarted_s"],
                f"kill9_{name}_answering_ms": 1000 * times["answering_s"],
            }
    finally:
        for container in containers:
            client.containers.get(container).remove(force=True)
        asyncio.run(_retire(settings, app))
    return figures


async def _retire(settings: Settings, app: str) -> None:
    gateway = Gateway(settings)
    try:
        await gateway.retire(app, "pre")
    finally:
        await gateway.close()
