"""The instance registry in etcd: ``/{APP}_{ENV}/{IP}-{PORT}`` → ``{IP}:{PORT}``, on a lease.

The key layout is the one legacy confd templates read (ENV upper-case). An instance's key lives on a
lease that its registrator keeps alive with heartbeats every TTL/3; if the host or the registrator dies,
the key expires within the TTL. Platform state lives under ``/shipline/`` and never matches an instance key.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re

import aetcd
from pydantic import BaseModel

from shipline.etcd_client import connect
from shipline.names import validate_name, validate_port

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_KEY = re.compile(
    r"^/(?P<app>[a-z0-9][a-z0-9-]{0,62})_(?P<env>[A-Z0-9][A-Z0-9-]{0,62})/(?P<ip>[0-9a-f.:]+)-(?P<port>\d{1,5})$"
)


class Instance(BaseModel):
    """One registered instance."""

    app: str
    env: str
    """Lower-case, as elsewhere in Shipline; upper-case only inside the key."""
    ip: str
    port: int

    @property
    def key(self) -> str:
        return instance_key(self.app, self.env, self.ip, self.port)

    @property
    def address(self) -> str:
        """``IP:PORT`` as nginx and HTTP clients write it: an IPv6 address in brackets."""
        ip = ipaddress.ip_address(self.ip)
        return f"[{ip}]:{self.port}" if ip.version == 6 else f"{ip}:{self.port}"


def prefix(app: str, env: str) -> str:
    """``/{APP}_{ENV}/`` with the trailing slash, so that ``/a_PRE`` never matches ``/a_PRE2``."""
    return f"/{validate_name(app, what='app name')}_{validate_name(env, what='environment').upper()}/"


def instance_key(app: str, env: str, ip: str, port: int) -> str:
    """The etcd key of an instance.

    Raises:
        ConfigError: if a name or the port is invalid; ValueError if ``ip`` is not an IP address.
    """
    address = ipaddress.ip_address(ip)
    return f"{prefix(app, env)}{address}-{validate_port(port)}"


def parse_key(key: str) -> Instance | None:
    """The instance a key names, or None for any other key."""
    match = _KEY.match(key)
    if match is None:
        return None
    try:
        ipaddress.ip_address(match["ip"])
    except ValueError:
        return None
    port = int(match["port"])
    if not 1 <= port <= 65535:
        return None
    return Instance(app=match["app"], env=match["env"].lower(), ip=match["ip"], port=port)


RETIRED = "/shipline/retired/"
"""``/shipline/retired/{app}/{env}``: the app was taken out of the environment (``shipline retire``); the
discover daemon removes its nginx file. A new release of it deletes the key."""


def retired_key(app: str, env: str) -> str:
    return f"{RETIRED}{validate_name(app, what='app name')}/{validate_name(env, what='environment')}"


def parse_retired_key(key: str) -> tuple[str, str] | None:
    """``(app, env)`` of a retirement key, or None for any other key."""
    if not key.startswith(RETIRED):
        return None
    parts = key[len(RETIRED) :].split("/")
    if len(parts) != 2 or not all(_NAME.match(p) for p in parts):
        return None
    return parts[0], parts[1]


CLEARED = "/shipline/cleared/"
"""``/shipline/cleared/{app}/{env}/{release}`` → the release's digest: its instances passed the release's
auto-tests and may take traffic. A container labelled ``shipline.release`` is registered (and so reached
through nginx) only once its release is cleared; the release flow clears it, and withdraws the clearance of
releases that are rolled back, superseded or retired."""


def cleared_key(app: str, env: str, release: int) -> str:
    validate_name(app, what="app name")
    validate_name(env, what="environment")
    return f"{CLEARED}{app}/{env}/{int(release)}"


def parse_cleared_key(key: str) -> tuple[str, str, int] | None:
    """``(app, env, release)`` of a clearance key, or None for any other key."""
    if not key.startswith(CLEARED):
        return None
    parts = key[len(CLEARED) :].split("/")
    if len(parts) != 3 or not all(_NAME.match(p) for p in parts[:2]) or not parts[2].isdigit():
        return None
    return parts[0], parts[1], int(parts[2])


async def clear_release(client: aetcd.Client, app: str, env: str, release: int, digest: str) -> None:
    """Let the instances of ``release`` take traffic: registrators register them from now on."""
    await client.put(cleared_key(app, env, release).encode(), digest.encode())


async def withdraw_clearances(
    client: aetcd.Client, app: str, env: str, *, only: set[int] | None = None, keep: int | None = None
) -> int:
    """Withdraw the clearances of the app's releases in ``env`` (``only`` these; never ``keep``)."""
    withdrawn = 0
    for kv in await client.get_prefix(f"{CLEARED}{validate_name(app, what='app name')}/{env}/".encode()):
        found = parse_cleared_key(kv.key.decode())
        if found is None or found[2] == keep or (only is not None and found[2] not in only):
            continue
        await client.delete(kv.key)
        withdrawn += 1
    return withdrawn


async def register(client: aetcd.Client, instance: Instance, lease: aetcd.Lease) -> None:
    """Put the instance's key on ``lease`` (idempotent)."""
    await client.put(instance.key.encode(), instance.address.encode(), lease=lease)


async def deregister(client: aetcd.Client, instance: Instance) -> None:
    """Delete the instance's key at once (a graceful stop does not wait for the lease to expire)."""
    await client.delete(instance.key.encode())


async def list_instances(
    client: aetcd.Client, *, app: str | None = None, env: str | None = None
) -> list[Instance]:
    """Registered instances, optionally of one app and/or environment, sorted."""
    if app is not None and env is not None:
        scan = prefix(app, env).encode()
    elif app is not None:
        scan = f"/{validate_name(app, what='app name')}_".encode()
    else:
        scan = b"/"
    found = []
    for kv in await client.get_prefix(scan):
        instance = parse_key(kv.key.decode())
        if instance is None or (app is not None and instance.app != app):
            continue
        if env is not None and instance.env != env:
            continue
        found.append(instance)
    return sorted(found, key=lambda i: (i.app, i.env, i.ip, i.port))


def wait_until_registered(
    etcd_url: str, *, app: str, env: str, addresses: set[str], timeout: float, interval: float = 0.2
) -> bool:
    """Wait until every ``ip:port`` of ``addresses`` is registered for ``app`` in ``env``.

    Returns:
        True once they all are; False if ``timeout`` seconds pass first.
    """

    async def wait() -> bool:
        async with connect(etcd_url) as client:
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                found = {i.address for i in await list_instances(client, app=app, env=env)}
                if addresses <= found:
                    return True
                if asyncio.get_running_loop().time() > deadline:
                    return False
                await asyncio.sleep(interval)

    return asyncio.run(wait())
