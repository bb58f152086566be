"""The registrator on the real Docker Engine and etcd: start, docker stop, kill -9, restart."""

import asyncio
import socket
from collections.abc import AsyncIterator

import aetcd
import docker
import httpx
import pytest

from shipline.config import Settings
from shipline.discovery.instances import clear_release, list_instances, withdraw_clearances
from shipline.discovery.registrator import Registrator
from shipline.docker import docker_client
from tests.images import busybox_web_image, free_ports, run_instance
from tests.waiting import eventually_async


@pytest.fixture(scope="module")
def image(settings: Settings) -> str:
    client = docker_client(settings.docker_url)
    repository = f"{settings.registry_address}/apps/regtest"
    digest = busybox_web_image(client, repository, "v1", {"healthz": "ok\n"})
    return f"{repository}@{digest}"


@pytest.fixture
async def daemon(settings: Settings, app: str) -> AsyncIterator[Registrator]:
    registrator = Registrator(
        docker_url=settings.docker_url, etcd_url=settings.etcd_url, ip="127.0.0.1", envs=["regtest"], ttl=3
    )
    stop = asyncio.Event()
    task = asyncio.create_task(registrator.run(stop))

    async def healthy() -> bool:
        return registrator.healthy

    assert await eventually_async(healthy, timeout=30, what="the registrator to connect to Docker and etcd")
    yield registrator
    stop.set()
    await asyncio.wait_for(task, timeout=10)


def start(
    client: docker.DockerClient, image: str, app: str, port: int, command: list[str] | None = None
) -> str:
    return run_instance(client, image, app=app, env="regtest", port=port, command=command)


async def keys(etcd: aetcd.Client, app: str) -> list[int]:
    return [i.port for i in await list_instances(etcd, app=app, env="regtest")]


async def test_registered_when_healthy_and_gone_before_a_stopped_container_exits(
    settings: Settings, image: str, app: str, etcd: aetcd.Client, daemon: Registrator
) -> None:
    client = docker_client(settings.docker_url)
    (port,) = free_ports(1)
    # httpd as PID 1 ignores SIGTERM: docker stop waits out its grace period, the key must go at once.
    container = client.containers.get(start(client, image, app, port))
    assert await eventually_async(lambda: _has(etcd, app, [port]), what=f"the key of port {port} in etcd")
    # A grace period of 8 s, the key awaited for 6: on busy shared cores the event can take a few seconds,
    # and the point stands — the key goes while the container still runs its grace period.
    stopping = asyncio.create_task(asyncio.to_thread(container.stop, timeout=8))
    assert await eventually_async(
        lambda: _has(etcd, app, []), timeout=6, what="the key to go as the container stops"
    )
    container.reload()
    assert container.status == "running", "the key must go before the container exits"
    await stopping


async def test_kill_9_removes_the_key(
    settings: Settings, image: str, app: str, etcd: aetcd.Client, daemon: Registrator
) -> None:
    client = docker_client(settings.docker_url)
    (port,) = free_ports(1)
    container = client.containers.get(start(client, image, app, port))
    assert await eventually_async(lambda: _has(etcd, app, [port]), what=f"the key of port {port} in etcd")
    container.kill(signal="SIGKILL")
    assert await eventually_async(
        lambda: _has(etcd, app, []), timeout=daemon.ttl + 1, what="the key to go after kill -9"
    )


async def test_unhealthy_container_is_never_registered(
    settings: Settings, image: str, app: str, etcd: aetcd.Client, daemon: Registrator
) -> None:
    client = docker_client(settings.docker_url)
    (port,) = free_ports(1)
    start(client, image, app, port, command=["sleep", "60"])
    # That something never happens has no state to poll for: a fixed wait it is, twenty of the
    # registrator's health probes (one each 0.1 s) long.
    await asyncio.sleep(2)
    assert await keys(etcd, app) == []


async def test_restart_keeps_keys_and_removes_orphans(
    settings: Settings, image: str, app: str, etcd: aetcd.Client
) -> None:
    client = docker_client(settings.docker_url)
    ports = free_ports(2)
    for port in ports:
        start(client, image, app, port)
    for _ in range(2):  # the registrator restarted while the containers run
        registrator = Registrator(
            docker_url=settings.docker_url,
            etcd_url=settings.etcd_url,
            ip="127.0.0.1",
            envs=["regtest"],
            ttl=3,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(registrator.run(stop))
        assert await eventually_async(lambda: _has(etcd, app, sorted(ports)), what=f"the keys of {ports}")
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    # A key whose container is gone (a crash while the registrator was down) goes at the next start.
    orphan_lease = await etcd.lease(ttl=60)
    await etcd.put(f"/{app}_REGTEST/127.0.0.1-1".encode(), b"127.0.0.1:1", lease=orphan_lease)
    registrator = Registrator(
        docker_url=settings.docker_url, etcd_url=settings.etcd_url, ip="127.0.0.1", envs=["regtest"], ttl=3
    )
    stop = asyncio.Event()
    task = asyncio.create_task(registrator.run(stop))
    assert await eventually_async(
        lambda: _has(etcd, app, sorted(ports)), what=f"the keys of {ports} and not the orphan's"
    )
    stop.set()
    await asyncio.wait_for(task, timeout=10)
    await orphan_lease.revoke()


async def test_an_instance_of_an_uncleared_release_is_never_registered(
    settings: Settings, image: str, app: str, etcd: aetcd.Client, daemon: Registrator
) -> None:
    """Verified before traffic: healthy is not enough, the release must be cleared — before and after a
    restart of the registrator (its resync), and at once when the clearance comes."""
    client = docker_client(settings.docker_url)
    verified, unverified = free_ports(2)
    run_instance(client, image, app=app, env="regtest", port=verified, release=1)
    run_instance(client, image, app=app, env="regtest", port=unverified, release=2)
    try:
        # Both answer their health path; neither release is cleared. Nothing to poll for: a fixed wait of
        # twenty health probes.
        await asyncio.sleep(2)
        assert await keys(etcd, app) == []
        await clear_release(etcd, app, "regtest", 1, "sha256:" + "1" * 64)
        assert await eventually_async(
            lambda: _has(etcd, app, [verified]), timeout=10, what="the cleared release's instance registered"
        )
        # A registrator that starts now (a restart, a resync) registers the cleared one, never the other.
        again = Registrator(
            docker_url=settings.docker_url,
            etcd_url=settings.etcd_url,
            ip="127.0.0.1",
            envs=["regtest"],
            ttl=3,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(again.run(stop))

        async def resynced() -> bool:
            return again.healthy

        assert await eventually_async(resynced, timeout=30, what="the second registrator's resync")
        await asyncio.sleep(1)
        assert await keys(etcd, app) == [verified]
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    finally:
        await withdraw_clearances(etcd, app, "regtest")


async def _has(etcd: aetcd.Client, app: str, ports: list[int]) -> bool:
    return sorted(await keys(etcd, app)) == ports


async def test_hanging_health_paths_during_a_resync_never_cost_the_lease(
    settings: Settings, image: str, app: str, etcd: aetcd.Client
) -> None:
    client = docker_client(settings.docker_url)
    # Ten instances whose health path takes the connection and never answers, and two healthy ones.
    listeners = []
    for _ in range(10):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        listeners.append(listener)
        start(client, image, app, listener.getsockname()[1], command=["sleep", "300"])
    healthy = free_ports(2)
    for port in healthy:
        start(client, image, app, port)
    await eventually_async(
        lambda: asyncio.to_thread(_answer_all, healthy), timeout=30, what="the healthy instances to answer"
    )
    registrator = Registrator(
        docker_url=settings.docker_url, etcd_url=settings.etcd_url, ip="127.0.0.1", envs=["regtest"], ttl=2
    )
    stop = asyncio.Event()
    task = asyncio.create_task(registrator.run(stop))
    try:
        assert await eventually_async(
            lambda: _has(etcd, app, sorted(healthy)), timeout=20, what="the healthy two"
        )

        async def resynced() -> bool:
            return registrator.healthy

        assert await eventually_async(resynced, timeout=10, what="the resync to finish")
        # Time is the stimulus here: several lease TTLs pass while the hanging instances stay silent.
        await asyncio.sleep(3 * 2)
        assert await keys(etcd, app) == sorted(healthy)
        assert registrator.healthy
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
        for listener in listeners:
            listener.close()


def _answer_all(ports: list[int]) -> bool:
    try:
        return all(httpx.get(f"http://127.0.0.1:{p}/healthz", timeout=1).status_code == 200 for p in ports)
    except httpx.HTTPError:
        return False
