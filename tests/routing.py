"""What an nginx routes, read the same way in both routing modes, and a private nginx to route with.

Dynamic mode: the members nginx's routing table holds (its admin API). Template mode: the ``server`` lines
of the app's file. Either way ``None`` means nginx has no route for the app (404), ``[]`` a route with no
live instance (503).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipline.config import Settings
from shipline.discovery.nginx import file_name
from shipline.discovery.routes import Mode, RoutingTable, running_mode, upstream_name
from shipline.stack.lifecycle import down, up
from tests.images import free_ports
from tests.waiting import eventually_async

MODES: list[Mode] = ["dynamic", "template"]


async def routed(stack: Settings, app: str, env: str) -> list[str] | None:
    """The members nginx routes ``app`` in ``env`` to, sorted; None when it has no route for it."""
    if running_mode(stack) == "dynamic":
        table = RoutingTable(stack.nginx_admin_socket)
        try:
            held = await table.members()
        finally:
            await table.close()
        members = held.get(upstream_name(app, env))
        return None if members is None else sorted(members)
    path = stack.nginx_conf_dir / file_name(app, env)
    try:
        text = path.read_text()
    except FileNotFoundError:  # never written, or removed now (retired): both mean no route
        return None
    lines = (line.split() for line in text.splitlines())
    return sorted(words[1] for words in lines if len(words) > 1 and words[0] == "server" and ":" in words[1])


def routed_now(stack: Settings, app: str, env: str) -> list[str] | None:
    """``routed`` for synchronous tests."""
    return asyncio.run(routed(stack, app, env))


def worker_pids(stack: Settings) -> set[int]:
    """The pids of an nginx's worker processes: a reload replaces every one of them."""
    master = (stack.nginx_dir / "nginx.pid").read_text().strip()
    children = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == master and "nginx" in fields.get("Name", ""):
            children.add(int(status.parent.name))
    return children


def serving_workers(stack: Settings) -> set[int]:
    """The workers that still accept connections: not those an earlier reload is shutting down."""
    active = set()
    for pid in worker_pids(stack):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"shutting down" not in title:
            active.add(pid)
    return active


async def settled(stack: Settings) -> None:
    """Wait until nginx runs one generation of workers (the config has one), so that every new connection
    sees the latest reload: just after one, the old workers may still accept a few."""

    async def one_generation() -> bool:
        return len(serving_workers(stack)) == 1

    await eventually_async(one_generation, timeout=10, interval=0.02, what="one generation of nginx workers")


def private_nginx(settings: Settings, home: Path, mode: Mode) -> Iterator[Settings]:
    """An nginx of its own (own home, free port) in ``mode``, on the stack's etcd; stopped afterwards."""
    (port,) = free_ports(1)
    stack = Settings(
        home=home,
        nginx_port=port,
        nginx_mode=mode,
        etcd_port=settings.etcd_port,
        docker_socket=settings.docker_socket,
    )
    up(stack, only={"nginx"}, report=lambda _: None)
    assert running_mode(stack) == mode
    yield stack
    down(stack, report=lambda _: None)


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> Mode:
    """Each routing mode in turn."""
    mode: Mode = request.param
    return mode


def fresh_get(port: int, path: str, host: str) -> str:
    """One request on a new connection, closed after the answer, as curl makes it: "status body"."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    return f"{head.split()[1].decode()} {body.decode(errors='replace').strip()}"


def dechunk(body: bytes) -> bytes:
    """The data of a chunked HTTP/1.1 body."""
    data = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        length = int(size.split(b";")[0] or b"0", 16)
        if length == 0:
            break
        data, body = data + rest[:length], rest[length + 2 :]
    return data
