"""Ports for new instances: free on the target host and reserved in etcd, never handed out twice.

A reservation is the key ``/shipline/ports/{host}/{port}``, created only if absent, in one etcd
transaction, on the caller's lease. Two deploys that race for the same port both try to create its key;
exactly one succeeds and the other takes the next port. The lease covers the deploy: once an instance
runs, its container's ``shipline.port`` label and its listening socket mark the port as taken, which
the caller passes in as ``in_use``.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Collection

import aetcd
from pydantic import BaseModel

from shipline.docker import docker_client
from shipline.errors import PortAllocationError
from shipline.etcd_client import connect, create_if_absent
from shipline.names import validate_name, validate_port
from shipline.stack.sockets import listening_ports

RESERVATIONS = "/shipline/ports"


class PortReservation(BaseModel):
    """Who holds a port on a host."""

    host: str
    port: int
    app: str
    env: str


def _host_prefix(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise PortAllocationError(f"invalid host address {host!r}") from exc
    return f"{RESERVATIONS}/{host}/"


async def reserved_ports(client: aetcd.Client, host: str) -> dict[int, PortReservation]:
    """Reservations currently held on ``host``."""
    result = await client.get_prefix(_host_prefix(host).encode())
    reservations = {}
    for kv in result:
        reservation = PortReservation.model_validate_json(kv.value)
        reservations[reservation.port] = reservation
    return reservations


async def reserve_ports(
    client: aetcd.Client,
    *,
    host: str,
    first: int,
    last: int,
    count: int,
    app: str,
    env: str,
    lease: aetcd.Lease,
    in_use: Collection[int] = (),
) -> list[int]:
    """Reserve ``count`` ports of ``first``..``last`` on ``host`` that nothing uses or holds.

    All or nothing: when the range cannot supply ``count`` ports, the ones taken so far are given back.

    Args:
        client: etcd client.
        host: Address of the Docker host the instances will listen on.
        first: Lowest port of the environment's range.
        last: Highest port of the environment's range.
        count: How many ports.
        app: App the ports are for.
        env: Environment the ports are for.
        lease: Lease the reservations live on (kept alive by the caller for the deploy's duration).
        in_use: Ports taken on the host already (listening sockets, containers' ``shipline.port`` labels).

    Returns:
        The reserved ports, lowest first.

    Raises:
        PortAllocationError: if the range has fewer than ``count`` free ports, or an argument is invalid.
    """
    validate_name(app, what="app name")
    validate_name(env, what="environment")
    validate_port(first, what="first port of the range")
    validate_port(last, what="last port of the range")
    if last < first or count < 1:
        raise PortAllocationError(f"cannot take {count} port(s) from the range {first}-{last}")
    prefix = _host_prefix(host)
    taken = set(in_use) | set(await reserved_ports(client, host))
    granted: list[int] = []
    for port in range(first, last + 1):
        if len(granted) == count:
            break
        if port in taken:
            continue
        key = f"{prefix}{port}".encode()
        value = PortReservation(host=host, port=port, app=app, env=env).model_dump_json().encode()
        if await create_if_absent(client, key, value, lease=lease):
            granted.append(port)
    if len(granted) < count:
        await release_ports(client, host=host, ports=granted)
        raise PortAllocationError(
            f"{app}/{env}: only {len(granted)} of {count} port(s) free in {first}-{last} on {host}",
            hint="widen the port range in the shipline-environment block, or stop old instances",
            transient=True,
        )
    return granted


async def release_ports(client: aetcd.Client, *, host: str, ports: Collection[int]) -> None:
    """Give reservations back before their lease would expire."""
    prefix = _host_prefix(host)
    for port in ports:
        await client.delete(f"{prefix}{port}".encode())


RESERVATION_SECONDS = 900
"""Covers a deploy at most; the deploy gives its reservations back when it ends (``free_ports``), and the
containers' shipline.port labels keep the ports of running instances taken."""


async def release_held_ports(
    client: aetcd.Client, *, host: str, ports: Collection[int], app: str, env: str
) -> list[int]:
    """Give back the reservations of ``ports`` that ``app`` in ``env`` holds (another's are left alone)."""
    held = await reserved_ports(client, host)
    mine = [p for p in ports if p in held and (held[p].app, held[p].env) == (app, env)]
    await release_ports(client, host=host, ports=mine)
    return mine


def free_ports(*, app: str, env: str, host: str, ports: Collection[int], etcd_url: str) -> list[int]:
    """At the end of a deploy, failed or not: its reservations go at once rather than after their lease
    (900 s), so failing deploys cannot exhaust a port range. Returns the ports given back."""

    async def free() -> list[int]:
        async with connect(etcd_url) as etcd:
            return await release_held_ports(etcd, host=host, ports=ports, app=app, env=env)

    return asyncio.run(free())


def allocate_ports(
    *,
    app: str,
    env: str,
    count: int,
    docker_host: str,
    host: str,
    first: int,
    last: int,
    etcd_url: str,
) -> list[int]:
    """Reserve ``count`` ports of ``first``..``last`` on the Docker host that nothing uses or holds.

    Taken are: ports in the ``shipline.port`` label of any container on the host, reservations in etcd
    on the host's address, and — when the host is this machine — every socket listening on that address
    or on all of them (a host of the scale profile is an address of 127.0.0.0/8: another host's instance
    on the same port is no clash).

    Raises:
        PortAllocationError: if the range has fewer than ``count`` free ports.
    """
    client = docker_client(docker_host)
    in_use = {
        int(c.labels["shipline.port"])
        for c in client.containers.list(all=True, filters={"label": "shipline.port"})
    }
    if ipaddress.ip_address(host).is_loopback:
        in_use |= listening_ports(host)  # the host is this machine: its sockets on that address count

    async def reserve() -> list[int]:
        async with connect(etcd_url) as etcd:
            lease = await etcd.lease(ttl=RESERVATION_SECONDS)
            return await reserve_ports(
                etcd,
                host=host,
                first=first,
                last=last,
                count=count,
                app=app,
                env=env,
                lease=lease,
                in_use=in_use,
            )

    return asyncio.run(reserve())
