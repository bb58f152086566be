"""A release run started by hand (no delivery, so no spec stage) still mounts only the host paths its
environment's block allows: refused before any record, port or container."""

from __future__ import annotations

from shipline.config import Settings
from shipline.docker import docker_client
from shipline.release.deploy import running_instances
from shipline.spec import Mount
from tests.e2e.test_release_flow import deliver, held_ports, releases, request


def test_a_release_that_mounts_a_path_its_environment_does_not_allow_is_refused(
    settings: Settings, app: str
) -> None:
    req = request(settings, app, "v1", expect="v1")
    service = req.service.model_copy(update={"mounts": [Mount(source="/srv/not-allowed", target="/data")]})
    run = deliver(req.model_copy(update={"service": service}))
    assert run.state is not None and run.state.is_failed()
    assert "service.mounts[0] /srv/not-allowed is not a host path pre allows" in str(run.state.message)
    assert releases(settings, app) == []
    assert held_ports(settings, app) == []
    assert running_instances(docker_client(settings.docker_url), app=app, env="pre") == []
