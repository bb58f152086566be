"""Discovery: change → served through nginx, against a 5-second polling renderer in the same harness.

A change moves an app from one backend to the next (put the new key, delete the old); it is isolated, a
quiet QUIET_SECONDS (over twice discover's coalescing window) after the previous one was served, since
bursts are measured on their own. Its latency runs from the put until a request through nginx reaches the
new backend. Each probe opens a new connection, as curl does: nginx lets its old workers answer their
open keep-alive connections with the old configuration for 100 ms after a reload, by design.

Every request goes to loopback. Counts and durations are bounded: 100 watched changes, 12 polled ones.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from shipline.config import Settings
from shipline.discovery.instances import Instance, list_instances, register, retired_key
from shipline.discovery.nginx import NginxConfig, file_name, render_app
from shipline.etcd_client import connect
from shipline.stack.lifecycle import up
from shipline.stack.processes import ProcessTable

CHANGES, POLLED_CHANGES, POLL_SECONDS = 100, 12, 5.0
QUIET_SECONDS = 0.25


class _Port(BaseHTTPRequestHandler):
    wbufsize = 1 << 16  # one write per response (see bench/routing.py)
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        body = str(self.server.server_address[1]).encode()  # type: ignore[index]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Quiet."""


def _backends(count: int) -> list[ThreadingHTTPServer]:
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Port) for _ in range(count)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    return servers


async def _served(
    client: httpx.AsyncClient, settings: Settings, app: str, port: int, timeout: float
) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            response = await client.get(settings.nginx_url, headers={"Host": f"{app}.bench.localhost"})
            if response.text == str(port):
                return time.monotonic() - started
        except httpx.HTTPError:
            pass  # nginx is reloading: try again
        await asyncio.sleep(0.002)
    raise TimeoutError(f"{app} never served port {port}")


async def _changes(settings: Settings, app: str, count: int, timeout: float) -> list[float]:
    """Move the app from one backend to the next, ``count`` times; the seconds until nginx served each."""
    servers = _backends(count + 1)
    latencies = []
    try:
        async with (
            connect(settings.etcd_url) as etcd,
            httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0)) as client,
        ):
            # Outlives the whole phase (12 polled changes take a minute and more); revoked at its end.
            lease = await etcd.lease(ttl=int(timeout * (count + 2)))
            first = Instance(app=app, env="bench", ip="127.0.0.1", port=int(servers[0].server_address[1]))
            await register(etcd, first, lease)
            await _served(client, settings, app, first.port, timeout)
            previous = first
            for server in servers[1:]:
                await asyncio.sleep(QUIET_SECONDS)
                instance = Instance(app=app, env="bench", ip="127.0.0.1", port=int(server.server_address[1]))
                started = time.monotonic()
                await register(etcd, instance, lease)
                await etcd.delete(previous.key.encode())
                await _served(client, settings, app, instance.port, timeout)
                latencies.append(time.monotonic() - started)
                previous = instance
            await lease.revoke()
            # Retired, as `shipline retire` does: the route goes (rather than answering 503 from now on).
            await etcd.put(retired_key(app, "bench").encode(), b"bench over")
            await asyncio.sleep(1.0)
            await etcd.delete(retired_key(app, "bench").encode())
    finally:
        for server in servers:
            server.shutdown()
    return latencies


async def _poll_renderer(settings: Settings, stop: asyncio.Event) -> None:
    """The seed's confd with -interval 5: read everything, render, check, reload — every 5 seconds."""
    nginx = NginxConfig(settings)
    async with connect(settings.etcd_url) as etcd:
        while not stop.is_set():
            instances = await list_instances(etcd)
            apps = sorted({(i.app, i.env) for i in instances})
            nginx.apply({file_name(a, e): render_app(a, e, instances, settings=settings) for a, e in apps})
            try:
                await asyncio.wait_for(stop.wait(), timeout=POLL_SECONDS)
            except TimeoutError:
                continue


async def _polling_baseline(settings: Settings) -> list[float]:
    stop = asyncio.Event()
    renderer = asyncio.create_task(_poll_renderer(settings, stop))
    try:
        return await _changes(settings, f"benchpoll-{os.getpid()}", POLLED_CHANGES, timeout=3 * POLL_SECONDS)
    finally:
        stop.set()
        await renderer


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _cpu_percent(pid: int, seconds: float = 10.0) -> float:
    def ticks() -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    before = ticks()
    time.sleep(seconds)
    return 100.0 * (ticks() - before) / os.sysconf("SC_CLK_TCK") / seconds


def _full_render_seconds(settings: Settings) -> float:
    """One render + nginx -t + reload of 1,000 instances across 200 apps (files removed afterwards)."""
    instances = [
        Instance(app=f"benchfull-{a}", env="bench", ip="127.0.0.1", port=30000 + a * 5 + i)
        for a in range(200)
        for i in range(5)
    ]
    nginx = NginxConfig(settings)
    files = {file_name(f"benchfull-{a}", "bench"): "" for a in range(200)}
    started = time.monotonic()
    nginx.apply(
        {name: render_app(name.rsplit("_", 1)[0], "bench", instances, settings=settings) for name in files}
    )
    elapsed = time.monotonic() - started
    for name in files:
        (settings.nginx_conf_dir / name).unlink(missing_ok=True)
    return elapsed


def run(settings: Settings) -> dict[str, float]:
    """Watched vs polled change latency, burst reloads, a full render, and the daemons' idle CPU."""
    table = ProcessTable(settings.run_dir)
    figures: dict[str, float] = {}
    watched = asyncio.run(_changes(settings, f"benchwatch-{os.getpid()}", CHANGES, timeout=10))
    figures |= {
        "watch_changes": len(watched),
        "watch_p50_ms": 1000 * statistics.median(watched),
        "watch_p99_ms": 1000 * _percentile(watched, 0.99),
    }
    for daemon in ("discover", "registrator"):
        record = table.running(daemon)
        if record is not None:
            figures[f"{daemon}_idle_cpu_percent"] = _cpu_percent(record.pid)
    # The baseline renders alone: the watching daemon is paused for it, then started again.
    table.stop("discover")
    try:
        polled = asyncio.run(_polling_baseline(settings))
        figures |= {
            "poll5s_changes": len(polled),
            "poll5s_p50_ms": 1000 * statistics.median(polled),
            "poll5s_p99_ms": 1000 * _percentile(polled, 0.99),
        }
        figures["full_render_1000_instances_200_apps_seconds"] = _full_render_seconds(settings)
    finally:
        up(settings, only={"discover"}, report=lambda line: None)
    return figures  # bursts, in both routing modes: bench/routing.py
