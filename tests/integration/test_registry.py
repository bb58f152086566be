"""Instance keys on leases in the real etcd, and `shipline services`."""

import asyncio
import json
from collections.abc import AsyncIterator

import aetcd
import pytest

from shipline.discovery.instances import Instance, deregister, list_instances, register
from tests.cli import shipline
from tests.waiting import eventually_async


@pytest.fixture
async def app(app: str, etcd: aetcd.Client) -> AsyncIterator[str]:
    """This test's app; its instance keys deleted after the test."""
    yield app
    for env in ("PRE", "PRE2", "PROD"):
        await etcd.delete_prefix(f"/{app}_{env}/".encode())


async def test_register_list_and_deregister(etcd: aetcd.Client, app: str) -> None:
    lease = await etcd.lease(ttl=30)
    pre = [Instance(app=app, env="pre", ip="127.0.0.1", port=p) for p in (21001, 21000)]
    for instance in pre:
        await register(etcd, instance, lease)
    await register(etcd, Instance(app=app, env="pre2", ip="127.0.0.1", port=21009), lease)
    assert (await etcd.get(f"/{app}_PRE/127.0.0.1-21000".encode())).value == b"127.0.0.1:21000"
    assert await list_instances(etcd, app=app, env="pre") == sorted(pre, key=lambda i: i.port)
    assert len(await list_instances(etcd, app=app)) == 3
    await deregister(etcd, pre[0])
    assert [i.port for i in await list_instances(etcd, app=app, env="pre")] == [21000]
    await lease.revoke()


async def test_key_expires_with_its_lease_when_heartbeats_stop(etcd: aetcd.Client, app: str) -> None:
    lease = await etcd.lease(ttl=2)
    await register(etcd, Instance(app=app, env="prod", ip="127.0.0.1", port=22000), lease)
    for _ in range(3):  # heartbeats keep it past its TTL
        await asyncio.sleep(1)
        await lease.refresh()
    assert len(await list_instances(etcd, app=app, env="prod")) == 1

    async def gone() -> bool:
        return await list_instances(etcd, app=app, env="prod") == []

    # No more heartbeats: gone within the TTL (+ etcd's granularity).
    assert await eventually_async(gone, timeout=3.5, what="the key to expire with its lease")


async def test_cli_lists_services_as_json(etcd: aetcd.Client, app: str) -> None:
    lease = await etcd.lease(ttl=30)
    await register(etcd, Instance(app=app, env="prod", ip="127.0.0.1", port=22001), lease)
    done = shipline("services", app, "--env", "prod", "--json", timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        {"app": app, "env": "prod", "ip": "127.0.0.1", "port": 22001, "key": f"/{app}_PROD/127.0.0.1-22001"}
    ]
    await lease.revoke()
