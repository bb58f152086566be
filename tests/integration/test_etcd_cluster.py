"""A 3-member etcd cluster over TLS, on loopback ports of its own (``SHIPLINE_ETCD_MEMBERS=3``,
``SHIPLINE_ETCD_TLS=true``): it comes up with authentication, refuses plaintext and certificate-less clients,
and Shipline's clients — a plain one, the registrator, discover — keep working when a member is killed
(SIGKILL, by pid) and when the leader is. The cluster has the stack's etcd users (the daemons in this
process read the stack's credentials file); the Docker Engine and the registry are the stack's.
"""

import asyncio
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import aetcd
import httpx
import pytest
from aetcd.exceptions import ClientError

from shipline.config import Settings
from shipline.discovery.discover import Discovery
from shipline.discovery.instances import list_instances
from shipline.discovery.registrator import Registrator
from shipline.docker import docker_client
from shipline.errors import ServiceUnavailableError
from shipline.etcd_client import connect, http_tls, read_credentials
from shipline.stack.components import etcd_members
from shipline.stack.lifecycle import State, down, status, up
from shipline.stack.processes import ProcessTable
from shipline.stack.sockets import free_port_run
from tests.images import busybox_web_image, free_ports, run_instance
from tests.routing import routed
from tests.waiting import eventually_async

ENV = "cluster"
TTL = 10
"""Leases' TTL: the registrator's default. A request in flight while the cluster elects a leader may wait
for its timeout (5 s) before the client tries the next, so a lease much shorter could expire meanwhile."""
MEMBERS = {"etcd-1", "etcd-2", "etcd-3"}


def consecutive_free_ports(count: int, first: int = 2585, last: int = 2599) -> int:
    """The first of ``count`` consecutive ports that nothing listens on, in ``first``..``last``."""
    base = free_port_run(count, first=first, last=last)
    if base is None:
        pytest.fail(f"no {count} consecutive free ports in {first}-{last} for the test cluster")
    return base


@pytest.fixture(scope="module")
def cluster(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Three TLS members (client ports base, base+2, base+4; peers one above each) and an nginx."""
    base = consecutive_free_ports(6)
    (nginx,) = free_ports(1)
    stack = Settings(
        home=tmp_path_factory.mktemp("cluster") / "home",
        etcd_port=base,
        etcd_peer_port=base + 1,
        etcd_members=3,
        etcd_tls=True,
        nginx_port=nginx,
        docker_socket=settings.docker_socket,
        etcd_credentials_file=settings.etcd_credentials_path,
    )
    try:
        up(stack, only={*MEMBERS, "nginx"}, report=lambda _: None)
        yield stack
    finally:
        down(stack, report=lambda _: None)


@pytest.fixture
def whole(cluster: Settings) -> Settings:
    """The cluster with every member running (a test before may have killed one)."""
    up(cluster, only=MEMBERS, report=lambda _: None)
    return cluster


@pytest.fixture
def tls_environment(cluster: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's settings name the cluster's certificates, as a host of the cluster's would."""
    files = cluster.etcd_tls_files
    assert files is not None
    for name, path in (("CA_FILE", files.ca), ("CERT_FILE", files.cert), ("KEY_FILE", files.key)):
        monkeypatch.setenv(f"SHIPLINE_ETCD_{name}", str(path))
    monkeypatch.setenv("SHIPLINE_ETCD_TLS", "true")


def kill(stack: Settings, name: str) -> None:
    record = ProcessTable(stack.run_dir).running(name)
    assert record is not None, f"{name} is not running"
    os.kill(record.pid, signal.SIGKILL)


async def leader(client: aetcd.Client) -> str:
    """The component name (``etcd-N``) of the cluster's leader, from the maintenance API."""
    found = await client.status()
    assert found.leader is not None, "the cluster has no leader"
    return f"etcd-{found.leader.name.removeprefix('shipline-')}"


async def answers(work: Callable[[], Awaitable[object]]) -> bool:
    """True once ``work`` succeeds; False while the cluster is still electing a leader."""
    try:
        await work()
    except (ClientError, ServiceUnavailableError):
        return False
    return True


def test_the_cluster_comes_up_over_tls_with_every_member_listed(whole: Settings) -> None:
    listed = {s.name: s for s in status(whole) if s.name.startswith("etcd")}
    assert set(listed) == MEMBERS
    for member in etcd_members(whole):
        assert listed[member.name].state == State.UP and listed[member.name].managed
        assert listed[member.name].url == member.url and member.url.startswith("https://127.0.0.1:")


async def test_the_members_form_one_cluster(whole: Settings) -> None:
    credentials = read_credentials(whole.etcd_credentials_path)
    async with connect(whole.etcd_url, credentials=credentials, tls=whole.etcd_tls_files) as client:
        members = {m.name: list(m.client_urls) for m in [m async for m in client.members()]}
    assert members == {f"shipline-{i + 1}": [url] for i, url in enumerate(whole.etcd_client_urls)}, (
        "each member under its own name and client URL"
    )


async def test_clients_without_tls_a_certificate_or_a_password_are_refused(whole: Settings) -> None:
    host, port = "127.0.0.1", whole.etcd_port
    with pytest.raises(ClientError):  # plaintext gRPC to a TLS port
        async with aetcd.Client(host=host, port=port, timeout=3) as plaintext:
            await plaintext.get(b"/shipline/x")
    files = whole.etcd_tls_files
    assert files is not None
    # The TLS handshake wants a client certificate.
    with (
        httpx.Client(trust_env=False, verify=str(files.ca)) as no_certificate,
        pytest.raises(httpx.TransportError),
    ):
        no_certificate.post(f"{whole.etcd_client_urls[0]}/v3/kv/range", json={"key": "Lw=="})
    with httpx.Client(trust_env=False) as plain_http, pytest.raises(httpx.TransportError):
        plain_http.post(f"http://{host}:{port}/v3/kv/range", json={"key": "Lw=="})
    with httpx.Client(trust_env=False, verify=http_tls(files)) as anonymous:  # TLS, certificate, no user
        refused = anonymous.post(
            f"{whole.etcd_client_urls[1]}/v3/kv/put", json={"key": "Lw==", "value": "eA=="}
        )
    assert refused.status_code != 200 and "user name is empty" in refused.text, refused.text
    credentials = read_credentials(whole.etcd_credentials_path)
    async with connect(whole.etcd_url, credentials=credentials, tls=files) as client:
        await client.put(b"/shipline/test/cluster", b"over tls")
        assert (await client.get(b"/shipline/test/cluster")).value == b"over tls"


def test_etcdctl_reaches_the_cluster_with_the_stack_flags(whole: Settings) -> None:
    etcdctl = shutil.which("etcdctl")
    assert etcdctl is not None, "etcdctl comes with etcd (make install)"
    sourced = f'set -a; . "{whole.etcd_credentials_path}"; set +a; "{etcdctl}" '
    flags = " ".join(shlex.quote(flag) for flag in whole.etcdctl_arguments())
    bare = {"PATH": os.environ["PATH"]}
    written = subprocess.run(
        [
            "sh",
            "-c",
            f"{sourced}{flags} put /shipline/test/etcdctl yes && {sourced}{flags} get /shipline/test/etcdctl",
        ],
        env=bare,
        capture_output=True,
        text=True,
    )
    assert written.returncode == 0 and written.stdout.splitlines()[-1] == "yes", written.stderr
    # Without the client certificate (the CA only) the TLS handshake fails: no member answers.
    endpoints, ca = whole.etcdctl_arguments()[:2]
    refused = subprocess.run(
        [
            "sh",
            "-c",
            f"{sourced}{shlex.quote(endpoints)} {shlex.quote(ca)} --dial-timeout=2s get /shipline/x",
        ],
        env=bare,
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0


@pytest.mark.parametrize("victim", ["a follower", "the leader"])
async def test_a_client_keeps_working_when_a_member_dies(whole: Settings, victim: str) -> None:
    credentials, files = read_credentials(whole.etcd_credentials_path), whole.etcd_tls_files
    prefix = f"/shipline/test/failover-{victim.replace(' ', '-')}/".encode()
    async with connect(whole.etcd_url, credentials=credentials, tls=files) as client:
        put = await client.put(prefix + b"before", b"1")
        lease = await client.lease(ttl=TTL)
        await client.put(prefix + b"leased", b"1", lease=lease)
        chief = await leader(client)
        target = chief if victim == "the leader" else sorted(MEMBERS - {chief})[0]
        kill(whole, target)

        # The next operations of the same client succeed, on the members left (once they elected a leader).
        assert await eventually_async(
            lambda: answers(lambda: client.put(prefix + b"after", b"2")),
            timeout=20,
            what="a put after the kill",
        )
        assert (await client.get(prefix + b"after")).value == b"2"
        assert (await lease.refresh()).TTL > 0, "the lease is kept alive after the kill"
        assert (await client.get(prefix + b"leased")).lease == lease.id
        assert await leader(client) != target, "the dead member is no longer the leader"
        # A watch from before the kill sees every change since, the one after the kill included.
        seen = []
        watch = await client.watch_prefix(prefix, start_revision=put.header.revision)
        async for event in watch:
            seen.append(event.kv.key.removeprefix(prefix))
            if event.kv.key.endswith(b"after"):
                break
        await watch.cancel()
        assert seen == [b"before", b"leased", b"after"]


async def test_a_client_keeps_working_after_a_member_restarts(whole: Settings) -> None:
    """A member that restarts has forgotten the auth tokens issued before (etcd keeps simple tokens in
    memory): the client's requests it serves fail "invalid auth token" until the client authenticates
    again, which it does by itself, once, and repeats the request."""
    credentials, files = read_credentials(whole.etcd_credentials_path), whole.etcd_tls_files
    prefix = b"/shipline/test/restarted-member/"
    async with connect(whole.etcd_url, credentials=credentials, tls=files) as client:
        await client.put(prefix + b"before", b"1")
        victim = sorted(MEMBERS - {await leader(client)})[0]
        # The member's store commits what it applied (the token among it) every 100 ms: once committed,
        # a restart does not apply it again, and the member never learns the token anew.
        await asyncio.sleep(1)
        kill(whole, victim)
        up(whole, only={victim}, report=lambda _: None)  # back, with no token of before
        # Round robin over the three: of 30 requests, about 10 reach the restarted member.
        for number in range(30):
            await client.put(prefix + str(number).encode(), b"2")
            assert (await client.get(prefix + b"before")).value == b"1"
        written = await client.put(prefix + b"watched", b"3")
        # A stream opened after the restart, from that revision on.
        watch = await asyncio.wait_for(
            client.watch_prefix(prefix + b"watched", start_revision=written.header.revision), timeout=20
        )
        event = await asyncio.wait_for(anext(aiter(watch)), timeout=20)
        assert event.kv.value == b"3"
        await watch.cancel()


@pytest.fixture(scope="module")
def image(settings: Settings) -> str:
    repository = f"{settings.registry_address}/apps/clustertest"
    files = {"healthz": "ok\n", "index.html": "up\n"}
    return f"{repository}@{busybox_web_image(docker_client(settings.docker_url), repository, 'v1', files)}"


@pytest.fixture
async def daemons(
    settings: Settings, whole: Settings, tls_environment: None
) -> AsyncIterator[tuple[Registrator, Discovery]]:
    registrator = Registrator(
        docker_url=settings.docker_url, etcd_url=whole.etcd_url, ip="127.0.0.1", envs=[ENV], ttl=TTL
    )
    discovery = Discovery(whole)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(registrator.run(stop)), asyncio.create_task(discovery.run(stop))]

    async def connected() -> bool:
        return registrator.healthy and discovery.watching

    assert await eventually_async(connected, timeout=30, what="the daemons to connect to the cluster")
    yield registrator, discovery
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=15)


async def test_the_registrator_lease_and_discover_survive_the_leader_death(
    settings: Settings, whole: Settings, app: str, image: str, daemons: tuple[Registrator, Discovery]
) -> None:
    registrator, discovery = daemons
    client = docker_client(settings.docker_url)
    first, second = free_ports(2)
    run_instance(client, image, app=app, env=ENV, port=first)

    async def leases() -> dict[str, int]:
        async with connect(whole.etcd_url) as etcd:  # the settings of this process: TLS, every member
            found = await etcd.get_prefix(f"/{app}_{ENV.upper()}/".encode())
            return {kv.key.decode(): int(kv.lease) for kv in found}

    key = f"/{app}_CLUSTER/127.0.0.1-{first}"
    assert await eventually_async(lambda: leases(), timeout=15, what=f"{key} registered")
    (held,) = (await leases()).values()
    assert await eventually_async(
        lambda: routed_to(whole, app, [f"127.0.0.1:{first}"]),
        timeout=10,
        what="nginx routing to the instance",
    )

    async with connect(whole.etcd_url) as etcd:
        victim = await leader(etcd)
    kill(whole, victim)
    # Longer than the lease's TTL: had its refreshes stopped, etcd would have dropped the key by now.
    await asyncio.sleep(TTL + 2)
    assert await leases() == {key: held}, "the key stays, on the registrator's first lease"
    assert registrator.healthy and discovery.watching

    # Discover keeps following: an instance registered after the kill reaches nginx.
    run_instance(client, image, app=app, env=ENV, port=second)
    expected = sorted(f"127.0.0.1:{p}" for p in (first, second))
    assert await eventually_async(
        lambda: routed_to(whole, app, expected), timeout=15, what=f"nginx routing to {expected}"
    )
    async with connect(whole.etcd_url) as etcd:
        assert len(await list_instances(etcd, app=app, env=ENV)) == 2


async def routed_to(stack: Settings, app: str, expected: list[str]) -> bool:
    return await routed(stack, app, ENV) == expected
