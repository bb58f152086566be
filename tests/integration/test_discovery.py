"""The discover daemon on the real etcd and nginx: changes served at once, bursts coalesced, recovery."""

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aetcd
import httpx
import pytest

from shipline.config import Settings
from shipline.discovery import Discovery, serve_status
from shipline.nginx import file_name
from shipline.registry import Instance, register
from tests.images import free_ports


class Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"live"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Keep the test output free of request logs."""


@pytest.fixture
async def etcd(settings: Settings) -> AsyncIterator[aetcd.Client]:
    async with aetcd.Client(host=settings.host, port=settings.etcd_port) as client:
        yield client


@pytest.fixture
def app(settings: Settings) -> str:
    return f"disc-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def daemon(settings: Settings, app: str, etcd: aetcd.Client) -> AsyncIterator[Discovery]:
    discovery = Discovery(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(discovery.run(stop))
    deadline = time.monotonic() + 10
    while not discovery.watching and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert discovery.watching, "discover did not start watching etcd"
    yield discovery
    stop.set()
    await asyncio.wait_for(task, timeout=10)
    await etcd.delete_prefix(f"/{app}_PRE/".encode())
    (settings.nginx_conf_dir / file_name(app, "pre")).unlink(missing_ok=True)


async def served(settings: Settings, app: str, expect: int, timeout: float = 5.0) -> int:
    deadline, status = time.monotonic() + timeout, 0
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            status = (
                await client.get(settings.nginx_url, headers={"Host": f"{app}.pre.localhost"})
            ).status_code
            if status == expect:
                return status
            await asyncio.sleep(0.02)
    return status


async def test_instance_served_at_once_and_503_after_it_leaves(
    settings: Settings, app: str, etcd: aetcd.Client, daemon: Discovery
) -> None:
    backend = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    try:
        lease = await etcd.lease(ttl=30)
        instance = Instance(app=app, env="pre", ip="127.0.0.1", port=int(backend.server_address[1]))
        await register(etcd, instance, lease)
        assert await served(settings, app, 200) == 200
        await lease.revoke()
        assert await served(settings, app, 503) == 503  # the server block stays and answers 503
    finally:
        backend.shutdown()
    assert daemon.metrics.latency_count >= 2 and daemon.metrics.latency_max < 5


async def test_burst_of_registrations_is_a_few_reloads(
    settings: Settings, app: str, etcd: aetcd.Client, daemon: Discovery
) -> None:
    lease = await etcd.lease(ttl=30)
    reloads_before = daemon.metrics.reloads
    ports = free_ports(200)
    await asyncio.gather(
        *(register(etcd, Instance(app=app, env="pre", ip="127.0.0.1", port=p), lease) for p in ports)
    )
    deadline = time.monotonic() + 10
    path = settings.nginx_conf_dir / file_name(app, "pre")
    while time.monotonic() < deadline and not (
        path.exists() and path.read_text().count("server 127.0.0.1:") == 200
    ):
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # let any trailing render finish
    assert path.read_text().count("server 127.0.0.1:") == 200
    assert daemon.metrics.reloads - reloads_before <= 3
    await lease.revoke()


async def test_compacted_revision_leads_to_a_fresh_read(
    settings: Settings, app: str, etcd: aetcd.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    lease = await etcd.lease(ttl=30)
    stale = (await etcd.put(f"/{app}_PRE/127.0.0.1-1".encode(), b"127.0.0.1:1", lease=lease)).header.revision
    for port in (2, 3):
        await register(etcd, Instance(app=app, env="pre", ip="127.0.0.1", port=port), lease)
    current = (await etcd.get(f"/{app}_PRE/127.0.0.1-3".encode())).header.revision
    await etcd.compact(current)
    discovery = Discovery(settings)
    real_resync, calls = discovery._resync, []

    async def resync_that_read_before_the_compaction(client: object) -> int:
        calls.append(1)
        revision = await real_resync(client)
        return stale - 1 if len(calls) == 1 else revision  # first watch starts below the compacted revision

    monkeypatch.setattr(discovery, "_resync", resync_that_read_before_the_compaction)
    stop = asyncio.Event()
    task = asyncio.create_task(discovery.run(stop))
    deadline = time.monotonic() + 10
    while (len(calls) < 2 or not discovery.watching) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert len(calls) >= 2 and discovery.watching
    await register(etcd, Instance(app=app, env="pre", ip="127.0.0.1", port=4), lease)
    path = settings.nginx_conf_dir / file_name(app, "pre")
    while time.monotonic() < deadline and "127.0.0.1:4 " not in (path.read_text() if path.exists() else ""):
        await asyncio.sleep(0.05)
    assert "server 127.0.0.1:4 " in path.read_text()
    stop.set()
    await asyncio.wait_for(task, timeout=10)
    await lease.revoke()
    path.unlink(missing_ok=True)


async def test_metrics_and_health_endpoint(settings: Settings, daemon: Discovery) -> None:
    (port,) = free_ports(1)
    server = await serve_status(daemon, "127.0.0.1", port)
    async with server, httpx.AsyncClient() as client:
        health = await client.get(f"http://127.0.0.1:{port}/healthz")
        metrics = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert (health.status_code, health.text) == (200, "ok\n")
    assert "shipline_discover_reloads_total" in metrics.text
    assert "shipline_discover_change_to_reload_seconds_count" in metrics.text
