"""Port reservations on the real etcd: concurrent deploys never get the same port."""

import asyncio
from collections.abc import AsyncIterator

import aetcd
import pytest

from shipline.errors import ConfigError, PortAllocationError
from shipline.release.ports import release_held_ports, release_ports, reserve_ports, reserved_ports

HOST = "127.0.0.42"  # a host address of these tests only, so no other test's reservations interfere


@pytest.fixture
async def etcd(etcd: aetcd.Client) -> AsyncIterator[aetcd.Client]:
    """The stack's etcd, with no reservation on HOST before and after the test."""
    await etcd.delete_prefix(f"/shipline/ports/{HOST}/".encode())
    yield etcd
    await etcd.delete_prefix(f"/shipline/ports/{HOST}/".encode())


async def test_concurrent_deploys_get_distinct_ports(etcd: aetcd.Client) -> None:
    lease = await etcd.lease(ttl=30)

    async def deploy(app: str) -> list[int]:
        return await reserve_ports(
            etcd, host=HOST, first=30000, last=30029, count=5, app=app, env="pre", lease=lease
        )

    results = await asyncio.gather(*(deploy(f"app{i}") for i in range(6)))
    ports = [port for granted in results for port in granted]
    assert len(ports) == 30 and len(set(ports)) == 30
    holders = await reserved_ports(etcd, HOST)
    for i, granted in enumerate(results):
        assert {holders[p].app for p in granted} == {f"app{i}"}
    await lease.revoke()


async def test_ports_in_use_on_the_host_are_skipped(etcd: aetcd.Client) -> None:
    lease = await etcd.lease(ttl=30)
    granted = await reserve_ports(
        etcd,
        host=HOST,
        first=30000,
        last=30010,
        count=2,
        app="web",
        env="prod",
        lease=lease,
        in_use={30000, 30002},
    )
    assert granted == [30001, 30003]
    await lease.revoke()


async def test_exhausted_range_takes_nothing(etcd: aetcd.Client) -> None:
    lease = await etcd.lease(ttl=30)
    await reserve_ports(etcd, host=HOST, first=30000, last=30003, count=3, app="a", env="pre", lease=lease)
    with pytest.raises(PortAllocationError, match="only 1 of 2 port"):
        await reserve_ports(
            etcd, host=HOST, first=30000, last=30003, count=2, app="b", env="pre", lease=lease
        )
    assert sorted(await reserved_ports(etcd, HOST)) == [30000, 30001, 30002]  # b's one port was given back
    await lease.revoke()


async def test_reservations_end_with_their_lease_or_on_release(etcd: aetcd.Client) -> None:
    lease = await etcd.lease(ttl=30)
    granted = await reserve_ports(
        etcd, host=HOST, first=30000, last=30009, count=3, app="a", env="pre", lease=lease
    )
    await release_ports(etcd, host=HOST, ports=granted[:1])
    assert sorted(await reserved_ports(etcd, HOST)) == granted[1:]
    await lease.revoke()
    assert await reserved_ports(etcd, HOST) == {}


async def test_a_deploy_gives_back_only_its_own_reservations(etcd: aetcd.Client) -> None:
    lease = await etcd.lease(ttl=900)
    mine = await reserve_ports(
        etcd, host=HOST, first=30000, last=30009, count=3, app="a", env="pre", lease=lease
    )
    theirs = await reserve_ports(
        etcd, host=HOST, first=30000, last=30009, count=2, app="b", env="pre", lease=lease
    )
    freed = await release_held_ports(etcd, host=HOST, ports=[*mine, *theirs], app="a", env="pre")
    assert freed == mine
    assert sorted(await reserved_ports(etcd, HOST)) == theirs  # long before the 900 s lease
    await lease.revoke()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"app": "bad app;"}, ConfigError),
        ({"env": "PRE\n"}, ConfigError),
        ({"first": 70000}, ConfigError),
        ({"host": "127.0.0.1; drop"}, PortAllocationError),
        ({"first": 30010, "last": 30000}, PortAllocationError),
    ],
)
async def test_invalid_arguments_are_rejected_before_any_write(
    etcd: aetcd.Client, kwargs: dict[str, object], error: type[Exception]
) -> None:
    lease = await etcd.lease(ttl=30)
    arguments: dict[str, object] = {
        "host": HOST,
        "first": 30000,
        "last": 30009,
        "count": 1,
        "app": "a",
        "env": "pre",
        "lease": lease,
    } | kwargs
    with pytest.raises(error):
        await reserve_ports(etcd, **arguments)  # type: ignore[arg-type]
    assert await reserved_ports(etcd, HOST) == {}
    await lease.revoke()
