"""An etcd cluster losing a member: how soon Shipline's client moves on (``python -m bench etcd_failover``).

A 3-member TLS cluster of its own (a home under the stack's, six consecutive free loopback ports), with
authentication as the stack's. One client (``shipline.etcd_client.connect``, every member on one channel)
starts a put every 50 ms, each on its own; then one member is killed (SIGKILL) — a follower, or the leader
found through the maintenance API — and the puts go on for a few seconds. Per kill:

- *moved on*: from the kill until the first put started after it succeeds (what a new request of a daemon
  sees);
- *longest wait*: the longest any put took, those in flight at the kill included (a request that went to a
  member whose leader just died waits for its timeout, 5 s).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import statistics
import time

from aetcd.exceptions import ClientError

from shipline.config import Settings
from shipline.errors import ServiceUnavailableError
from shipline.etcd_client import connect, read_credentials
from shipline.stack.lifecycle import down, up
from shipline.stack.processes import ProcessTable
from shipline.stack.sockets import free_port_run

ROUNDS = 5
INTERVAL = 0.05
AFTER_KILL = 7.0
"""Seconds of puts after a kill: longer than a request's timeout, so that every put in flight ends."""


def _six_free_ports(first: int = 2585, last: int = 2599) -> int:
    base = free_port_run(6, first=first, last=last)
    if base is None:
        raise RuntimeError(f"no 6 consecutive free ports in {first}-{last} for the bench's etcd cluster")
    return base


async def _one_kill(cluster: Settings, victim: str) -> tuple[float, float]:
    """Kill a ``victim`` ("follower" or "leader"); return (moved on, longest wait) in seconds."""
    credentials = read_credentials(cluster.etcd_credentials_path)
    names = {f"etcd-{i + 1}" for i in range(cluster.etcd_members)}
    async with connect(cluster.etcd_url, credentials=credentials, tls=cluster.etcd_tls_files) as client:
        leader = (await client.status()).leader
        chief = f"etcd-{leader.name.removeprefix('shipline-')}"
        target = chief if victim == "leader" else sorted(names - {chief})[0]
        outcomes: list[tuple[float, float, bool]] = []

        async def put(number: int) -> None:
            began = time.monotonic()
            try:
                await client.put(f"/shipline/bench/failover/{number}".encode(), b"x")
                ok = True
            except (ClientError, ServiceUnavailableError):
                ok = False
            outcomes.append((began, time.monotonic(), ok))

        tasks = []
        killed_at = time.monotonic() + 1.0
        killed = False
        number = 0
        while time.monotonic() < killed_at + AFTER_KILL:
            if not killed and time.monotonic() >= killed_at:
                record = ProcessTable(cluster.run_dir).running(target)
                assert record is not None, f"{target} is not running"
                killed_at = time.monotonic()
                os.kill(record.pid, signal.SIGKILL)
                killed = True
            tasks.append(asyncio.create_task(put(number)))
            number += 1
            await asyncio.sleep(INTERVAL)
        await asyncio.gather(*tasks)
    after = [end - killed_at for began, end, ok in outcomes if ok and began >= killed_at]
    longest = max(end - began for began, end, _ in outcomes)
    return (min(after) if after else float("nan")), longest


def run(settings: Settings) -> dict[str, object]:
    base = _six_free_ports()
    home = settings.home / "bench" / "etcd-failover"
    shutil.rmtree(home, ignore_errors=True)
    cluster = Settings(
        home=home, etcd_port=base, etcd_peer_port=base + 1, etcd_members=3, etcd_tls=True, host=settings.host
    )
    names = {f"etcd-{i + 1}" for i in range(cluster.etcd_members)}
    figures: dict[str, object] = {"members": "3, TLS, authentication"}
    try:
        for victim in ("follower", "leader"):
            moved, waits = [], []
            for _ in range(ROUNDS):
                up(cluster, only=names, report=lambda _: None)
                on, longest = asyncio.run(_one_kill(cluster, victim))
                moved.append(on)
                waits.append(longest)
            figures[f"{victim} killed: moved on, median s"] = statistics.median(moved)
            figures[f"{victim} killed: moved on, max s"] = max(moved)
            figures[f"{victim} killed: longest wait, max s"] = max(waits)
    finally:
        down(cluster, report=lambda _: None)
        shutil.rmtree(home, ignore_errors=True)
    return figures
