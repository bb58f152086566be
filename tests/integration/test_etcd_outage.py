"""The daemons against a private etcd and nginx (own home, free ports): etcd stopped for 10 s and started
again under a running registrator and discover daemon, and a container stopped during a resync. Only these
tests' daemons write there (the stack's registrator would otherwise do their work); the Docker Engine is
the stack's.
"""

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from shipline.config import Settings
from shipline.discovery.discover import Discovery
from shipline.discovery.instances import list_instances
from shipline.discovery.registrator import Registrator
from shipline.docker import docker_client
from shipline.etcd_client import connect
from shipline.stack.lifecycle import down, up
from shipline.stack.processes import ProcessTable
from tests.images import busybox_web_image, free_ports, run_instance
from tests.routing import MODES, routed
from tests.waiting import eventually_async

ENV = "outage"
OUTAGE_SECONDS = 10
KEYS_INTERVAL = 0.2  # each look at the keys opens a connection to etcd: not at the default pace


@pytest.fixture
def private(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Settings]:
    """etcd and nginx of their own; nginx in the routing mode the test names (default: auto)."""
    etcd, peer, nginx = free_ports(3)
    home = tmp_path_factory.mktemp("outage") / "home"
    stack = Settings(
        home=home,
        etcd_port=etcd,
        etcd_peer_port=peer,
        nginx_port=nginx,
        nginx_mode=getattr(request, "param", "auto"),
        docker_socket=settings.docker_socket,
        # The same users as the stack's: the daemons in this process connect with the stack's credentials.
        etcd_credentials_file=settings.etcd_credentials_path,
    )
    up(stack, only={"etcd", "nginx"}, report=lambda _: None)
    yield stack
    down(stack, report=lambda _: None)


@pytest.fixture
async def daemons(settings: Settings, private: Settings) -> AsyncIterator[tuple[Registrator, Discovery]]:
    registrator = Registrator(
        docker_url=settings.docker_url, etcd_url=private.etcd_url, ip="127.0.0.1", envs=[ENV], ttl=3
    )
    discovery = Discovery(private)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(registrator.run(stop)), asyncio.create_task(discovery.run(stop))]

    async def connected() -> bool:
        return registrator.healthy and discovery.watching

    assert await eventually_async(connected, timeout=30, what="the daemons to connect to the private etcd")
    yield registrator, discovery
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=15)


@pytest.fixture(scope="module")
def image(settings: Settings) -> str:
    repository = f"{settings.registry_address}/apps/outagetest"
    files = {"healthz": "ok\n", "index.html": "up\n"}
    return f"{repository}@{busybox_web_image(docker_client(settings.docker_url), repository, 'v1', files)}"


def start(settings: Settings, image: str, app: str, port: int) -> None:
    run_instance(docker_client(settings.docker_url), image, app=app, env=ENV, port=port)


async def keys(stack: Settings, app: str) -> list[str]:
    async with connect(stack.etcd_url) as etcd:
        return sorted(f"{i.key}={i.address}" for i in await list_instances(etcd, app=app, env=ENV))


async def keys_are(stack: Settings, app: str, expected: list[str]) -> bool:
    return await keys(stack, app) == expected


@pytest.mark.parametrize("private", MODES, indirect=True)
async def test_daemons_recover_after_etcd_is_stopped_for_ten_seconds(
    settings: Settings, private: Settings, app: str, image: str, daemons: tuple[Registrator, Discovery]
) -> None:
    registrator, discovery = daemons
    before, during = free_ports(2)

    async def upstreams() -> list[str]:
        return await routed(private, app, ENV) or []

    async def upstreams_are(expected: list[str]) -> bool:
        return await upstreams() == expected

    async def served() -> int:
        async with httpx.AsyncClient(trust_env=False) as client:
            return (
                await client.get(private.nginx_url, headers={"Host": f"{app}.{ENV}.localhost"})
            ).status_code

    start(settings, image, app, before)
    first = [f"/{app}_OUTAGE/127.0.0.1-{before}=127.0.0.1:{before}"]
    assert await eventually_async(
        lambda: keys_are(private, app, first),
        timeout=15,
        interval=KEYS_INTERVAL,
        what=f"the keys {first} in etcd",
    )
    assert await eventually_async(
        lambda: upstreams_are([f"127.0.0.1:{before}"]), timeout=10, what=f"nginx routing to {before}"
    )

    assert ProcessTable(private.run_dir).stop("etcd"), "the private etcd did not stop"
    start(settings, image, app, during)  # a container that starts while etcd is away
    await asyncio.sleep(OUTAGE_SECONDS)  # the outage itself: etcd stays away this long
    assert await served() == 200, "nginx keeps serving the last good config while etcd is down"
    assert await upstreams() == [f"127.0.0.1:{before}"]
    up(private, only={"etcd"}, report=lambda _: None)

    # Both are in etcd once each, and nginx routes to both: the registrator re-registered on a new lease and
    # discover re-read the prefix and watches again.
    both = sorted(f"/{app}_OUTAGE/127.0.0.1-{p}=127.0.0.1:{p}" for p in (before, during))
    assert await eventually_async(
        lambda: keys_are(private, app, both),
        timeout=20,
        interval=KEYS_INTERVAL,
        what=f"the keys {both} in etcd",
    )
    expected = sorted(f"127.0.0.1:{p}" for p in (before, during))
    assert await eventually_async(
        lambda: upstreams_are(expected), timeout=10, what=f"nginx routing to {expected}"
    )

    async def ready() -> bool:  # the registrator is healthy once its resync has also swept stale keys
        return registrator.healthy and discovery.watching

    assert await eventually_async(ready, timeout=10, what="both daemons back to work")
    assert discovery.metrics.value("shipline_discover_resyncs_total") >= 2
    # The watch is live again: a stop after the outage leaves etcd and nginx at once.
    (container,) = docker_client(settings.docker_url).containers.list(
        filters={"label": [f"shipline.app={app}", f"shipline.port={before}"]}
    )
    await asyncio.to_thread(container.stop, timeout=2)
    assert await eventually_async(
        lambda: upstreams_are([f"127.0.0.1:{during}"]), timeout=5, what=f"nginx routing to {during} only"
    )
    assert await served() == 200


async def test_a_stop_during_the_resync_is_not_lost(
    settings: Settings, private: Settings, app: str, image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (port,) = free_ports(1)
    start(settings, image, app, port)
    (container,) = docker_client(settings.docker_url).containers.list(
        filters={"label": f"shipline.app={app}"}
    )
    registrator = Registrator(
        docker_url=settings.docker_url, etcd_url=private.etcd_url, ip="127.0.0.1", envs=[ENV], ttl=3
    )
    real_resync = registrator._resync
    key = [f"/{app}_OUTAGE/127.0.0.1-{port}=127.0.0.1:{port}"]
    stopped_during_resync = asyncio.Event()

    async def resync_then_the_container_stops(*args: object) -> int:
        revision = await real_resync(*args)
        assert await keys(private, app) == key, "the resync registers the running container"
        await asyncio.to_thread(container.stop, timeout=1)  # before the registrator follows events
        stopped_during_resync.set()
        return revision

    monkeypatch.setattr(registrator, "_resync", resync_then_the_container_stops)
    stop = asyncio.Event()
    task = asyncio.create_task(registrator.run(stop))
    try:
        await asyncio.wait_for(stopped_during_resync.wait(), timeout=30)
        assert await eventually_async(
            lambda: keys_are(private, app, []),
            timeout=5,
            interval=KEYS_INTERVAL,
            what="the key to go (else the stop was lost: the key stayed)",
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
