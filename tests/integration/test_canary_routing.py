"""A canary's share of the traffic and nginx's figures, on a real nginx of its own (dynamic routing) driven by
a discover daemon in this process from the stack's etcd: the weight seen over 1,000 requests, the 5xx and
latency counts per member, and the analysis that promotes or aborts, or ends early on an operator's word.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aetcd
import httpx
import pytest

from shipline.config import Settings
from shipline.discovery.discover import Discovery
from shipline.discovery.instances import Instance, register
from shipline.discovery.routes import RoutingTable
from shipline.discovery.splits import TrafficSplit, decide_split, delete_split, put_split, split_key
from shipline.release.canary import analyse
from shipline.spec import CanarySpec
from tests.routing import fresh_get, private_nginx, routed
from tests.waiting import eventually_async


class Answer(BaseHTTPRequestHandler):
    """Answers its port; a server whose ``fail_every`` is N answers every Nth request with a 500."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        server = self.server
        server.seen += 1  # type: ignore[attr-defined]
        failing = server.fail_every and server.seen % server.fail_every == 0  # type: ignore[attr-defined]
        body = str(server.server_port).encode()  # type: ignore[attr-defined]
        self.send_response(500 if failing else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Keep the test output free of request logs."""


def serve(fail_every: int = 0) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    server.seen = 0  # type: ignore[attr-defined]
    server.fail_every = fail_every  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    yield from private_nginx(settings, tmp_path_factory.mktemp("canary") / "home", "dynamic")


@pytest.fixture
async def discovery(stack: Settings) -> AsyncIterator[Discovery]:
    daemon = Discovery(stack)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))

    async def watching() -> bool:
        return daemon.watching

    assert await eventually_async(watching, timeout=15, what="discover watching etcd")
    yield daemon
    stop.set()
    await asyncio.wait_for(task, timeout=10)


@pytest.fixture
async def lease(etcd: aetcd.Client, app: str) -> AsyncIterator[aetcd.Lease]:
    granted = await etcd.lease(ttl=300)
    yield granted
    await granted.revoke()
    await etcd.delete_prefix(f"/{app}_PRE/".encode())
    await delete_split(etcd, app, "pre")


async def live_with_canary(
    etcd: aetcd.Client,
    lease: aetcd.Lease,
    stack: Settings,
    app: str,
    stable: list[int],
    canary: list[int],
    weight: int,
) -> TrafficSplit:
    """Register ``stable`` and ``canary`` servers as instances of ``app`` in pre, the canary on a split."""
    for port in stable + canary:
        await register(etcd, Instance(app=app, env="pre", ip="127.0.0.1", port=port), lease)
    split = TrafficSplit(
        app=app, env="pre", release=2, weight=weight, members=[f"127.0.0.1:{p}" for p in canary]
    )
    await put_split(etcd, split)
    wanted = sorted([*(f"127.0.0.1:{p}" for p in stable + canary), f"|{weight}"])

    async def split_routed() -> bool:
        return await routed(stack, app, "pre") == wanted

    assert await eventually_async(split_routed, timeout=10, interval=0.02, what="the split in nginx's table")
    return split


def load(stack: Settings, app: str, requests: int, *, keep_alive: bool) -> Counter[str]:
    """``requests`` requests through nginx, one after the other: answers counted by "status body"."""
    seen: Counter[str] = Counter()
    headers = {"Host": f"{app}.pre.localhost"}
    if keep_alive:
        with httpx.Client(trust_env=False, timeout=5) as client:
            for _ in range(requests):
                answer = client.get(stack.nginx_url, headers=headers)
                seen[f"{answer.status_code} {answer.text}"] += 1
        return seen
    for _ in range(requests):  # a new connection each time, as curl makes it
        seen[fresh_get(stack.nginx_port, "/", headers["Host"])] += 1
    return seen


@pytest.mark.parametrize("keep_alive", [True, False], ids=["keep-alive", "new-connection"])
async def test_the_canary_takes_its_weight_of_1000_requests_and_nginx_counts_them(
    stack: Settings,
    discovery: Discovery,
    etcd: aetcd.Client,
    lease: aetcd.Lease,
    app: str,
    keep_alive: bool,
) -> None:
    servers = [serve(), serve(), serve(fail_every=5)]
    ports = [int(s.server_address[1]) for s in servers]
    try:
        await live_with_canary(etcd, lease, stack, app, ports[:2], ports[2:], weight=10)
        table = RoutingTable(stack.nginx_admin_socket)
        before = await table.stats(f"{app}_pre")
        seen = await asyncio.to_thread(load, stack, app, 1000, keep_alive=keep_alive)
        after = await table.stats(f"{app}_pre")
        await table.close()
    finally:
        for server in servers:
            server.shutdown()
    canary = f"127.0.0.1:{ports[2]}"
    to_canary = seen[f"200 {ports[2]}"] + seen[f"500 {ports[2]}"]
    assert 70 <= to_canary <= 130, dict(seen)  # 10 % of 1,000 within 3 points
    assert seen[f"500 {ports[2]}"] == to_canary // 5, dict(seen)  # the canary's own failures, passed on
    assert seen[f"200 {ports[0]}"] + seen[f"200 {ports[1]}"] == 1000 - to_canary, dict(seen)
    assert abs(seen[f"200 {ports[0]}"] - seen[f"200 {ports[1]}"]) <= 20, dict(seen)  # even among the rest
    counted = after[canary].since(before.get(canary, after[canary].__class__()))
    assert counted.attempts == to_canary
    assert counted.errors == to_canary // 5
    assert sum(counted.buckets.values()) == to_canary
    stable = [
        after[f"127.0.0.1:{p}"].attempts - before.get(f"127.0.0.1:{p}", counted.__class__()).attempts
        for p in ports[:2]
    ]
    assert sum(stable) == 1000 - to_canary


async def test_a_split_ends_when_its_key_goes_and_the_route_is_even_again(
    stack: Settings, discovery: Discovery, etcd: aetcd.Client, lease: aetcd.Lease, app: str
) -> None:
    servers = [serve(), serve()]
    ports = [int(s.server_address[1]) for s in servers]
    try:
        await live_with_canary(etcd, lease, stack, app, ports[:1], ports[1:], weight=25)
        seen = await asyncio.to_thread(load, stack, app, 200, keep_alive=True)
        assert seen[f"200 {ports[1]}"] == 50, dict(seen)
        await etcd.delete(split_key(app, "pre").encode())

        async def even() -> bool:
            return await routed(stack, app, "pre") == sorted(f"127.0.0.1:{p}" for p in ports)

        assert await eventually_async(even, timeout=10, interval=0.02, what="the split gone from the table")
        seen = await asyncio.to_thread(load, stack, app, 200, keep_alive=True)
        assert seen[f"200 {ports[1]}"] == 100, dict(seen)
    finally:
        for server in servers:
            server.shutdown()


class Traffic:
    """Requests through nginx at about 100 per second on one keep-alive connection, until stopped."""

    def __init__(self, stack: Settings, app: str) -> None:
        self.stack, self.app = stack, app
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(trust_env=False, timeout=5) as client:
            while not self.stop.is_set():
                client.get(self.stack.nginx_url, headers={"Host": f"{self.app}.pre.localhost"})
                time.sleep(0.01)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


@pytest.mark.parametrize(("fail_every", "decision"), [(5, "abort"), (0, "promote")])
async def test_the_analysis_aborts_a_failing_canary_and_promotes_a_good_one(
    stack: Settings,
    discovery: Discovery,
    etcd: aetcd.Client,
    lease: aetcd.Lease,
    settings: Settings,
    app: str,
    fail_every: int,
    decision: str,
) -> None:
    servers = [serve(), serve(fail_every=fail_every)]
    ports = [int(s.server_address[1]) for s in servers]
    table = RoutingTable(stack.nginx_admin_socket)
    limits = CanarySpec(weight=50, seconds=2, max_error_rate=0.01, max_p99_ms=500, min_requests=20)
    try:
        split = await live_with_canary(etcd, lease, stack, app, ports[:1], ports[1:], weight=50)
        with Traffic(stack, app):
            verdict = await analyse(split, limits, etcd_url=settings.etcd_url, table=table, log=print)
    finally:
        await table.close()
        for server in servers:
            server.shutdown()
    assert verdict.decision == decision, verdict.summary()
    assert verdict.decided_by == "analysis"
    assert verdict.canary.requests >= 20 and verdict.baseline.requests >= 20, verdict.summary()
    assert verdict.baseline.errors == 0
    if decision == "abort":
        assert verdict.canary.error_rate is not None and 0.15 <= verdict.canary.error_rate <= 0.25
        assert any("max_error_rate" in reason for reason in verdict.reasons), verdict.reasons
    else:
        assert verdict.canary.errors == 0
        assert verdict.canary.p99_ms is not None and verdict.canary.p99_ms < 500
    assert 2 <= verdict.window_seconds < 3
    assert verdict.decision_seconds < 2
    rows = verdict.table()
    assert [row["side"] for row in rows] == ["canary", "baseline"]
    assert rows[0]["requests"] == verdict.canary.requests


async def test_an_operator_ends_the_window_early(
    stack: Settings,
    discovery: Discovery,
    etcd: aetcd.Client,
    lease: aetcd.Lease,
    settings: Settings,
    app: str,
) -> None:
    servers = [serve(), serve()]
    ports = [int(s.server_address[1]) for s in servers]
    table = RoutingTable(stack.nginx_admin_socket)
    limits = CanarySpec(weight=50, seconds=60, min_requests=0)
    try:
        split = await live_with_canary(etcd, lease, stack, app, ports[:1], ports[1:], weight=50)

        async def abort_soon() -> None:
            await asyncio.sleep(1)
            await decide_split(etcd, app, "pre", "abort", "alice")

        started = time.monotonic()
        with Traffic(stack, app):
            verdict, _ = await asyncio.gather(
                analyse(split, limits, etcd_url=settings.etcd_url, table=table, log=print), abort_soon()
            )
    finally:
        await table.close()
        for server in servers:
            server.shutdown()
    assert time.monotonic() - started < 5  # not the 60 s window
    assert (verdict.decision, verdict.decided_by) == ("abort", "operator alice")
    assert "ended early by operator alice" in verdict.reasons
