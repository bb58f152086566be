"""Each component really works: registry round trip, etcd leases, nginx reload, pool isolation."""

import asyncio
import io
import os
import signal
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import docker
import httpx
import pytest

from shipline.build.registry import Registry
from shipline.config import POOLS, PROJECT_ROOT, Settings
from shipline.etcd_client import connect
from tests.waiting import eventually

STACK_CHECK = "flows/stack_check.py:stack_check"


def _tiny_image(client: docker.DockerClient, repository: str, tag: str) -> str:
    """Import a one-file image (no pull from outside) and return its id."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        payload = f"made for {repository} at {time.time()}\n".encode()
        info = tarfile.TarInfo("hello.txt")
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    client.api.import_image_from_data(buffer.getvalue(), repository=repository, tag=tag)
    return str(client.images.get(f"{repository}:{tag}").id)


def test_registry_push_then_pull_by_digest(settings: Settings) -> None:
    client = docker.DockerClient(base_url=settings.docker_url)
    repository = f"{settings.registry_address}/shipline-tests/roundtrip"
    image_id = _tiny_image(client, repository, "v1")
    Registry.of_stack(settings).log_in(client)
    errors = [e for e in client.images.push(repository, tag="v1", stream=True, decode=True) if "error" in e]
    assert errors == []
    digest = client.images.get_registry_data(f"{repository}:v1").id
    assert digest.startswith("sha256:")
    client.images.remove(f"{repository}:v1", force=True)
    pulled = client.images.pull(f"{repository}@{digest}")
    assert pulled.id == image_id
    client.images.remove(pulled.id, force=True)


def test_etcd_key_on_a_lease_expires(settings: Settings) -> None:
    async def scenario() -> list[str]:
        async with connect(settings.etcd_url) as client:
            key = f"/stacktest_PRE/127.0.0.1-{os.getpid()}".encode()
            lease = await client.lease(ttl=2)
            await client.put(key, b"127.0.0.1:1", lease=lease)
            assert (await client.get(key)).value == b"127.0.0.1:1"
            events: list[str] = []
            watch = await client.watch(key)

            async def first_event() -> None:
                async for event in watch:
                    events.append(str(event.kind))
                    return

            await asyncio.wait_for(first_event(), timeout=10)
            await watch.cancel()
            assert await client.get(key) is None
            return events

    assert asyncio.run(scenario()) == ["DELETE"]


def test_nginx_serves_a_rendered_server_block_after_reload(settings: Settings, tmp_path: Path) -> None:
    # No underscore: {app}_{env}.conf files belong to the discover daemon, which rewrites them (the etcd
    # test above puts a stacktest_PRE key whose expiry discover renders as a 503 file).
    conf = settings.nginx_conf_dir / "componenttest.conf"
    host = "componenttest.localhost"
    marker = f"componenttest {time.time()}"
    conf.write_text(
        f"server {{ listen {settings.host}:{settings.nginx_port}; server_name {host};"
        f' location / {{ return 200 "{marker}"; }} }}\n'
    )
    try:
        pid = int((settings.nginx_dir / "nginx.pid").read_text())
        os.kill(pid, signal.SIGHUP)
        assert eventually(
            lambda: httpx.get(settings.nginx_url, headers={"Host": host}).text == marker,
            timeout=10,
            interval=0.1,
            what=f"nginx answering {marker!r} after the reload",
        )
    finally:
        conf.unlink()
        os.kill(int((settings.nginx_dir / "nginx.pid").read_text()), signal.SIGHUP)


@pytest.fixture(scope="module")
def stack_check_deployments(settings: Settings) -> Iterator[None]:
    """The stack-check flow deployed once per pool for these tests only: operators never see it."""
    from prefect import Flow
    from prefect.client.orchestration import get_client

    flow = cast(Flow[..., Any], Flow.from_source(source=str(PROJECT_ROOT), entrypoint=STACK_CHECK))
    # Called from synchronous code, Prefect's dual sync/async methods return values, not coroutines.
    ids = [
        cast(UUID, cast(Any, flow).to_deployment(name=f"{pool}-test", work_pool_name=pool).apply())
        for pool in POOLS
    ]
    yield
    with get_client(sync_client=True) as client:
        for deployment_id in ids:
            client.delete_deployment(deployment_id)


@pytest.mark.parametrize("pool", ["prod", "ci"])
def test_a_deployment_run_goes_to_its_pools_worker_only(
    settings: Settings, pool: str, stack_check_deployments: None
) -> None:
    from shipline.flow_runs import run_deployment_and_wait

    flow_run = run_deployment_and_wait(f"stack-check/{pool}-test", timeout=120)
    assert flow_run.state is not None and flow_run.state.is_completed(), flow_run.state
    identity = flow_run.state.result()
    assert (identity.pool, identity.worker) == (pool, f"shipline-{pool}")
    for other in {"ci", "pre", "prod"} - {pool}:
        assert str(flow_run.id) not in (settings.log_dir / f"worker-{other}.log").read_text()
    assert str(flow_run.id) in (settings.log_dir / f"worker-{pool}.log").read_text()
