"""Instances released by the release flow drop every capability, gain no privilege and live under the pre
block's pids limit; a release run started by hand (no spec stage) that asks for a capability its
environment's block does not allow is refused before any record, port or container."""

from __future__ import annotations

from blocks import ShiplineEnvironment
from shipline.config import Settings
from shipline.docker import docker_client
from shipline.release.deploy import running_instances
from tests.e2e.test_release_flow import deliver, held_ports, releases, request


def test_a_release_asking_for_a_capability_its_environment_does_not_allow_is_refused(
    settings: Settings, app: str
) -> None:
    req = request(settings, app, "v1", expect="v1")
    run = deliver(
        req.model_copy(update={"service": req.service.model_copy(update={"capabilities": ["NET_ADMIN"]})})
    )
    assert run.state is not None and run.state.is_failed()
    assert (
        "service.capabilities NET_ADMIN is not a capability pre allows: an operator adds it to "
        "allowed_capabilities of the shipline-environment block 'pre'"
    ) in str(run.state.message)
    assert releases(settings, app) == []
    assert held_ports(settings, app) == []
    assert running_instances(docker_client(settings.docker_url), app=app, env="pre") == []


def test_released_instances_have_no_capability_and_the_blocks_pids_limit(
    settings: Settings, app: str
) -> None:
    run = deliver(request(settings, app, "v1", expect="v1"))
    assert run.state is not None and run.state.is_completed(), run.state
    client = docker_client(settings.docker_url)
    (instance,) = running_instances(client, app=app, env="pre")
    container = client.containers.get(instance.container_id)
    host = container.attrs["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["PidsLimit"] == ShiplineEnvironment.for_env("pre").instance_pids_limit == 1024
    status = container.exec_run(["cat", "/proc/1/status"]).output.decode()
    assert "CapEff:\t0000000000000000" in status and "NoNewPrivs:\t1" in status
