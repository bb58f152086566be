"""Routing on a real nginx of its own, in both modes, driven by a discover daemon in this process from the
stack's etcd: served at once, 503 once the instances leave, 404 once retired, a bad key harming only
itself; and, in dynamic mode, no reload for any membership change or a new app, and the table back within a
second of nginx being killed and started again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aetcd
import httpx
import pytest

from shipline.config import Settings
from shipline.discovery.discover import MARKER, Discovery
from shipline.discovery.instances import Instance, register, retired_key
from shipline.discovery.nginx import file_name
from shipline.discovery.routes import Mode, RoutingTable
from shipline.stack.lifecycle import up
from shipline.stack.processes import process_start_ticks
from tests.routing import mode, private_nginx, routed, settled, worker_pids
from tests.waiting import eventually_async

__all__ = ["mode"]  # the fixture that runs each test in both modes; a test that is about one mode names it


class Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = str(self.server.server_port).encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Keep the test output free of request logs."""


@pytest.fixture
def backends() -> Iterator[list[int]]:
    """Three HTTP servers on free loopback ports, each answering its own port."""
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), Answer) for _ in range(3)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield [int(s.server_address[1]) for s in servers]
    for server in servers:
        server.shutdown()


@pytest.fixture
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory, mode: Mode) -> Iterator[Settings]:
    yield from private_nginx(settings, tmp_path_factory.mktemp(f"routing-{mode}") / "home", mode)


@pytest.fixture
async def discovery(stack: Settings) -> AsyncIterator[Discovery]:
    daemon = Discovery(stack)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    assert await eventually_async(lambda: _watching(daemon), timeout=15, what="discover watching etcd")
    yield daemon
    stop.set()
    await asyncio.wait_for(task, timeout=10)


@pytest.fixture
async def lease(etcd: aetcd.Client, app: str) -> AsyncIterator[aetcd.Lease]:
    granted = await etcd.lease(ttl=30)
    yield granted
    await granted.revoke()
    await etcd.delete_prefix(f"/{app}_PRE/".encode())
    await etcd.delete(retired_key(app, "pre").encode())


async def _watching(discovery: Discovery) -> bool:
    return discovery.watching


async def answer(stack: Settings, app: str, client: httpx.AsyncClient | None = None) -> tuple[int, str]:
    """Status and body of nginx's answer for ``app`` in pre."""
    own = client is None
    client = client or httpx.AsyncClient(trust_env=False, timeout=5)
    try:
        response = await client.get(stack.nginx_url, headers={"Host": f"{app}.pre.localhost"})
        return response.status_code, response.text
    finally:
        if own:
            await client.aclose()


async def answers(stack: Settings, app: str, status: int, body: str | None = None) -> bool:
    async def seen() -> bool:
        got = await answer(stack, app)
        return got[0] == status and (body is None or got[1] == body)

    return await eventually_async(seen, timeout=10, interval=0.02, what=f"nginx answering {status} for {app}")


def instance(app: str, port: int, ip: str = "127.0.0.1") -> Instance:
    return Instance(app=app, env="pre", ip=ip, port=port)


async def test_an_instance_is_served_at_once_and_503_once_it_leaves(
    stack: Settings,
    discovery: Discovery,
    etcd: aetcd.Client,
    lease: aetcd.Lease,
    app: str,
    backends: list[int],
) -> None:
    assert await routed(stack, app, "pre") is None
    assert (await answer(stack, app))[0] == 404  # no route yet: a host no app answers to
    await register(etcd, instance(app, backends[0]), lease)
    assert await answers(stack, app, 200, str(backends[0]))
    assert await routed(stack, app, "pre") == [f"127.0.0.1:{backends[0]}"]
    await etcd.delete(instance(app, backends[0]).key.encode())
    # (template mode: an old worker may answer a moment longer after the reload)
    assert await answers(stack, app, 503, f"no live instance of {app} in pre\n")
    assert await routed(stack, app, "pre") == []


async def test_a_retired_app_has_no_route(
    stack: Settings,
    discovery: Discovery,
    etcd: aetcd.Client,
    lease: aetcd.Lease,
    app: str,
    backends: list[int],
) -> None:
    await register(etcd, instance(app, backends[0]), lease)
    assert await answers(stack, app, 200)
    await etcd.delete(instance(app, backends[0]).key.encode())
    await etcd.put(retired_key(app, "pre").encode(), b"now")

    async def gone() -> bool:
        return await routed(stack, app, "pre") is None

    assert await eventually_async(gone, timeout=10, what="the retired app's route removed")
    assert await answers(stack, app, 404)


async def test_a_bad_key_harms_only_itself(
    stack: Settings,
    discovery: Discovery,
    etcd: aetcd.Client,
    lease: aetcd.Lease,
    app: str,
    backends: list[int],
) -> None:
    # Keys anyone who can write etcd may put: not an address, a port out of range, an IPv6 instance.
    await etcd.put(f"/{app}_PRE/999.1.1.1-80".encode(), b"999.1.1.1:80", lease=lease)
    await etcd.put(f"/{app}_PRE/127.0.0.1-70000".encode(), b"127.0.0.1:70000", lease=lease)
    await etcd.put(f"/{app}_PRE/::1-22000".encode(), b"[::1]:22000", lease=lease)
    await register(etcd, instance(app, backends[0]), lease)

    async def both() -> bool:
        return await routed(stack, app, "pre") == sorted(["[::1]:22000", f"127.0.0.1:{backends[0]}"])

    assert await eventually_async(both, timeout=10, what="the IPv6 and the good instance routed")
    assert await answers(stack, app, 200, str(backends[0]))
    await settled(stack)  # template mode: the workers of the last reload only
    for _ in range(6):  # nothing listens on [::1]:22000: each request goes on to the good instance
        assert await answer(stack, app) == (200, str(backends[0]))
    await register(etcd, instance(app, backends[1]), lease)  # later changes still apply

    async def third() -> bool:
        return f"127.0.0.1:{backends[1]}" in (await routed(stack, app, "pre") or [])

    assert await eventually_async(third, timeout=10, what="a later change applied")


@pytest.mark.parametrize("mode", ["dynamic"])
async def test_dynamic_membership_changes_and_new_apps_never_reload_nginx(
    stack: Settings,
    discovery: Discovery,
    etcd: aetcd.Client,
    lease: aetcd.Lease,
    app: str,
    backends: list[int],
) -> None:
    workers = worker_pids(stack)
    assert workers, "nginx has no worker process"
    other = f"{app}-two"
    async with httpx.AsyncClient(trust_env=False, timeout=5) as kept_alive:  # one connection for all
        await register(etcd, instance(app, backends[0]), lease)
        assert await answers(stack, app, 200, str(backends[0]))
        await register(etcd, instance(app, backends[1]), lease)
        seen = set()
        for _ in range(30):
            seen.add((await answer(stack, app, kept_alive))[1])
            if len(seen) == 2:
                break
        assert seen == {str(backends[0]), str(backends[1])}  # round robin, seen on a kept-alive connection
        await etcd.put(instance(other, backends[2]).key.encode(), b"x", lease=lease)  # a new app
        assert await answers(stack, other, 200, str(backends[2]))
        await etcd.delete(instance(app, backends[0]).key.encode())

        async def only_second() -> bool:
            return {(await answer(stack, app, kept_alive))[1] for _ in range(4)} == {str(backends[1])}

        assert await eventually_async(only_second, timeout=10, what="the first instance out of rotation")
    await etcd.delete_prefix(f"/{other}_PRE/".encode())
    assert await answers(stack, other, 503)
    assert worker_pids(stack) == workers  # the same workers throughout: no reload
    assert discovery.metrics.value("shipline_discover_reloads_total") == 0
    assert discovery.metrics.value("shipline_discover_table_writes_total") >= 5


@pytest.mark.parametrize("mode", ["dynamic"])
async def test_a_killed_nginx_gets_its_table_back_once_it_runs_again(
    stack: Settings,
    discovery: Discovery,
    etcd: aetcd.Client,
    lease: aetcd.Lease,
    app: str,
    backends: list[int],
) -> None:
    await register(etcd, instance(app, backends[0]), lease)
    assert await answers(stack, app, 200)
    os.kill(int((stack.nginx_dir / "nginx.pid").read_text()), signal.SIGHUP)  # a reload by someone else
    await asyncio.sleep(0.6)
    assert await answer(stack, app) == (200, str(backends[0]))  # the table survives a reload
    assert discovery.metrics.value("shipline_discover_table_restores_total") == 0

    pids = worker_pids(stack) | {int((stack.nginx_dir / "nginx.pid").read_text())}
    for pid in pids:  # only this test's nginx, by pid
        os.kill(pid, signal.SIGKILL)

    async def gone() -> bool:
        return all(process_start_ticks(pid) is None for pid in pids)

    assert await eventually_async(gone, timeout=5, what="the killed nginx gone")
    assert stack.nginx_admin_socket.exists()  # left behind by the kill; the next start must not trip on it
    await asyncio.to_thread(up, stack, only={"nginx"}, report=lambda _: None)
    started = time.monotonic()
    assert await answers(stack, app, 200, str(backends[0]))
    assert time.monotonic() - started < 5  # `make bench` measures it: within a second
    assert discovery.metrics.value("shipline_discover_table_restores_total") >= 1


@pytest.mark.parametrize("mode", ["dynamic"])
async def test_template_files_left_from_before_give_way_to_the_table(
    stack: Settings, etcd: aetcd.Client, lease: aetcd.Lease, app: str, backends: list[int]
) -> None:
    old = stack.nginx_conf_dir / file_name(app, "pre")
    old.write_text(f"{MARKER} (an older mode)\nserver {{ listen {stack.host}:{stack.nginx_port}; }}\n")
    daemon = Discovery(stack)
    await register(etcd, instance(app, backends[0]), lease)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        assert await answers(stack, app, 200, str(backends[0]))
        assert not old.exists()
        table = RoutingTable(stack.nginx_admin_socket)
        applied = await table.update({"bad_pre": ["1.2.3:4"], f"{app}_pre": [f"127.0.0.1:{backends[1]}"]})
        await table.close()
        assert applied.applied == 1 and list(applied.rejected) == ["set bad_pre 1.2.3:4"]
        assert await answers(stack, app, 200, str(backends[1]))  # the good line applied beside the bad one
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


@pytest.mark.parametrize("mode", ["dynamic"])
async def test_nginx_refuses_a_bad_member_and_the_upstream_keeps_its_last_good_ones(
    stack: Settings,
    discovery: Discovery,
    etcd: aetcd.Client,
    lease: aetcd.Lease,
    app: str,
    backends: list[int],
) -> None:
    await register(etcd, instance(app, backends[0]), lease)
    assert await answers(stack, app, 200, str(backends[0]))
    table = RoutingTable(stack.nginx_admin_socket)
    try:  # a writer that skips discover's checks: nginx's own check still refuses it
        done = await table.update({f"{app}_pre": ["not-an-address", f"127.0.0.1:{backends[1]}"]})
        assert done.applied == 0
        assert list(done.rejected) == [f"set {app}_pre not-an-address,127.0.0.1:{backends[1]}"]
        assert (await table.members())[f"{app}_pre"] == [f"127.0.0.1:{backends[0]}"]
    finally:
        await table.close()
    for _ in range(4):
        assert await answer(stack, app) == (200, str(backends[0]))
