"""`shipline retire`: an app taken out of an environment leaves nothing behind but its history."""

from __future__ import annotations

import asyncio
import json

from shipline.config import Settings
from shipline.discovery.instances import list_instances
from shipline.docker import docker_client
from shipline.etcd_client import connect
from shipline.release.deploy import running_instances
from shipline.release.history import ReleaseStatus
from shipline.release.lifecycle import deploy_limit_exists
from tests.cli import shipline
from tests.e2e.test_release_flow import deliver, held_ports, releases, request
from tests.routing import routed_now
from tests.waiting import eventually


def registered(settings: Settings, app: str) -> int:
    async def read() -> int:
        async with connect(settings.etcd_url) as client:
            return len(await list_instances(client, app=app, env="pre"))

    return asyncio.run(read())


def test_retire_removes_everything_but_the_history_and_rollback_brings_the_app_back(
    settings: Settings, app: str
) -> None:
    first = deliver(request(settings, app, "v1", expect="v1"))
    assert first.state is not None and first.state.is_completed(), first.state
    eventually(lambda: registered(settings, app) == 1, timeout=30, what="the instance registered")
    eventually(lambda: routed_now(settings, app, "pre"), timeout=30, what="nginx routing the app")

    done = shipline("retire", app, "--env", "pre", "--grace", "2", "--json", timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (len(report["instances"]), len(report["keys"]), report["limit_removed"]) == (1, 1, True)
    assert running_instances(docker_client(settings.docker_url), app=app, env="pre") == []
    assert registered(settings, app) == 0
    eventually(
        lambda: routed_now(settings, app, "pre") is None,
        timeout=30,
        what="the app's route removed by discover",
    )
    assert held_ports(settings, app) == []
    assert not deploy_limit_exists(app, "pre")
    assert [(r.number, r.status) for r in releases(settings, app)] == [
        (1, ReleaseStatus.SUPERSEDED),
        (2, ReleaseStatus.RETIRED),
    ]

    back = shipline("rollback", app, "--env", "pre", timeout=600)
    assert back.returncode == 0, back.stderr
    assert [(r.number, r.status) for r in releases(settings, app)][-1] == (3, ReleaseStatus.LIVE)
    eventually(lambda: routed_now(settings, app, "pre"), timeout=30, what="the route back after the rollback")


def test_retiring_an_unknown_app_is_a_clear_error(settings: Settings) -> None:
    done = shipline("retire", "no-such-app", "--env", "pre")
    assert done.returncode == 1
    assert "error: no-such-app has no release in pre and runs nothing there" in done.stderr
    assert "hint:" in done.stderr and "Traceback" not in done.stderr
