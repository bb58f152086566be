"""The release flow, run by the pre worker through its deployment, on the real engine, etcd and Prefect."""

import asyncio

import httpx
from prefect.client.schemas.objects import FlowRun

from shipline.config import Settings
from shipline.docker import docker_client
from shipline.etcd_client import connect
from shipline.flow_runs import run_deployment_and_wait
from shipline.release.deploy import running_instances
from shipline.release.history import Release, ReleaseStatus, list_releases
from shipline.release.lifecycle import release_deployment, release_history
from shipline.release.plan import ReleaseRequest
from shipline.release.ports import reserved_ports
from shipline.spec import AutoTests, HttpCheck, ServiceSpec
from tests.cli import shipline
from tests.images import busybox_web_image


def request(
    settings: Settings,
    app: str,
    version: str,
    expect: str,
    *,
    command: list[str] | None = None,
    files: dict[str, str] | None = None,
    **service: float,
) -> ReleaseRequest:
    """A release of a busybox web image of ``version`` (running ``command`` if given, serving ``files``
    too) to PRE."""
    client = docker_client(settings.docker_url)
    repository = f"{settings.registry_address}/apps/{app}"
    served = {"healthz": "ok\n", "version.txt": f"{version}\n", **(files or {})}
    digest = busybox_web_image(client, repository, version, served, command=command)
    return ReleaseRequest(
        app=app,
        env="pre",
        image=repository,
        digest=digest,
        sha=version * 20,
        service=ServiceSpec.model_validate(
            {"stop_grace_seconds": 2, "health_timeout_seconds": 30, **service}
        ),
        auto_tests=AutoTests(http=[HttpCheck(path="/version.txt", contains=expect)]),
    )


def releases(settings: Settings, app: str) -> list[Release]:
    async def read() -> list[Release]:
        async with connect(settings.etcd_url) as client:
            return await list_releases(client, app, "pre")

    return asyncio.run(read())


def held_ports(settings: Settings, app: str) -> list[int]:
    async def read() -> list[int]:
        async with connect(settings.etcd_url) as client:
            held = await reserved_ports(client, "127.0.0.1")
        return sorted(port for port, reservation in held.items() if reservation.app == app)

    return asyncio.run(read())


def deliver(req: ReleaseRequest) -> FlowRun:
    return run_deployment_and_wait(
        release_deployment("pre"), parameters={"request": req.model_dump(mode="json")}, timeout=300
    )


def test_live_then_rolled_back_then_superseded(settings: Settings, app: str) -> None:
    client = docker_client(settings.docker_url)

    first = deliver(request(settings, app, "v1", expect="v1"))
    assert first.state is not None and first.state.is_completed(), first.state
    live = running_instances(client, app=app, env="pre")
    assert [i.release for i in live] == [1]
    assert httpx.get(f"http://127.0.0.1:{live[0].port}/version.txt").text == "v1\n"

    broken = deliver(request(settings, app, "v2", expect="v3"))
    assert broken.state is not None and broken.state.is_failed()
    assert "auto-test(s) failed" in str(broken.state.message)
    assert held_ports(settings, app) == []  # the failed deploy gave its reservations back at once
    assert [i.release for i in running_instances(client, app=app, env="pre")] == [1]
    assert httpx.get(f"http://127.0.0.1:{live[0].port}/version.txt").text == "v1\n"

    third = deliver(request(settings, app, "v2", expect="v2"))
    assert third.state is not None and third.state.is_completed(), third.state
    now = running_instances(client, app=app, env="pre")
    assert [i.release for i in now] == [3]
    assert httpx.get(f"http://127.0.0.1:{now[0].port}/version.txt").text == "v2\n"
    assert [(r.number, r.status) for r in releases(settings, app)] == [
        (1, ReleaseStatus.SUPERSEDED),
        (2, ReleaseStatus.ROLLED_BACK),
        (3, ReleaseStatus.LIVE),
    ]
    assert held_ports(settings, app) == []  # the live instance's container label holds its port


def test_cli_rollback_redeploys_the_previous_digest(settings: Settings, app: str) -> None:
    client = docker_client(settings.docker_url)
    v1, v2 = request(settings, app, "v1", expect="v1"), request(settings, app, "v2", expect="v2")
    for req in (v1, v2):
        flow_run = deliver(req)
        assert flow_run.state is not None and flow_run.state.is_completed(), flow_run.state
    done = shipline("rollback", app, "--env", "pre", timeout=600)
    assert done.returncode == 0, done.stderr
    assert "back to release 1" in done.stdout
    history = releases(settings, app)
    assert [(r.number, r.status, r.digest) for r in history][-1] == (3, ReleaseStatus.LIVE, v1.digest)
    (instance,) = running_instances(client, app=app, env="pre")
    assert httpx.get(f"http://127.0.0.1:{instance.port}/version.txt").text == "v1\n"


def test_cli_rollback_without_history_is_a_clear_error(settings: Settings, app: str) -> None:
    done = shipline("rollback", app, "--env", "pre", timeout=60)
    assert done.returncode == 1
    assert "error: there is no release to roll back to" in done.stderr


def test_prod_takes_only_a_digest_that_went_live_in_pre(settings: Settings, app: str) -> None:
    """The road is the prod block's rule, enforced by the release flow: a run of release-to-prod started
    directly is refused until the same digest went live in PRE, then accepted."""
    pre = request(settings, app, "v1", expect="v1")
    prod = pre.model_copy(update={"env": "prod"})

    def to_prod() -> FlowRun:
        return run_deployment_and_wait(
            release_deployment("prod"), parameters={"request": prod.model_dump(mode="json")}, timeout=300
        )

    refused = to_prod()
    assert refused.state is not None and refused.state.is_failed(), refused.state
    assert "has not passed pre: prod takes only a digest that went live in pre" in str(refused.state.message)
    assert release_history(app, "prod", etcd_url=settings.etcd_url) == []  # nothing was opened, nothing ran
    assert running_instances(docker_client(settings.docker_url), app=app, env="prod") == []

    live_in_pre = deliver(pre)
    assert live_in_pre.state is not None and live_in_pre.state.is_completed(), live_in_pre.state
    accepted = to_prod()
    assert accepted.state is not None and accepted.state.is_completed(), accepted.state
    assert [r.status for r in release_history(app, "prod", etcd_url=settings.etcd_url)] == [
        ReleaseStatus.LIVE
    ]
