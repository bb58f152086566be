"""Host mounts are the operator's decision: the allow-list of an environment, and paths never allowed."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from blocks import ShiplineEnvironment
from shipline.mounts import HostMount, mount_problems, never_allowed
from shipline.spec import Mount

JAVA = [HostMount(path="/usr/lib/jvm"), HostMount(path="/etc/java-17-openjdk")]


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/etc",
        "/proc",
        "/proc/1/root",
        "/sys/fs",
        "/root",
        "/root/.ssh",
        "/var/run/docker.sock",
        "/run/docker.sock",
        "/run",
        "/var",
        "/var/lib/docker",
        "/var/lib/docker/volumes",
    ],
)
def test_paths_that_reach_the_host_itself_are_never_allowed(path: str) -> None:
    assert never_allowed(path) is not None


def test_shiplines_home_and_what_holds_it_are_never_allowed(tmp_path: Path) -> None:
    home = tmp_path / "shipline-home"
    assert never_allowed(str(home / "prefect"), home) is not None
    assert never_allowed(str(tmp_path), home) is not None
    assert never_allowed(str(tmp_path / "elsewhere"), home) is None


@pytest.mark.parametrize(
    "path", ["/usr/lib/jvm/default-java", "/etc/java-17-openjdk", "/opt/tools", "/srv/data"]
)
def test_ordinary_paths_are_for_the_operator_to_allow(path: str) -> None:
    assert never_allowed(path) is None


def test_a_spec_mounts_only_what_the_environment_allows() -> None:
    mounts = [
        Mount(source="/usr/lib/jvm/default-java", target="/opt/jdk"),  # below an allowed path: fine
        Mount(source="/opt/tools", target="/opt/tools"),  # not allowed here
        Mount(source="/usr/lib/jvm", target="/jvm", read_only=False),  # allowed read-only only
        Mount(source="/var/run/docker.sock", target="/var/run/docker.sock"),  # never, anywhere
    ]
    problems = mount_problems(mounts, JAVA, env="prod", field="service.mounts")
    assert len(problems) == 3
    assert problems[0].startswith("service.mounts[1] /opt/tools is not a host path prod allows")
    assert "host_mounts of the shipline-environment block 'prod'" in problems[0]
    assert problems[1].startswith("service.mounts[2] /usr/lib/jvm is allowed read-only in prod, not writable")
    assert problems[2].startswith("service.mounts[3] /var/run/docker.sock: ")
    assert "can never be mounted, in any environment" in problems[2]


def test_a_writable_entry_allows_writable_mounts() -> None:
    allowed = [HostMount(path="/srv/cache", read_write=True)]
    mounts = [Mount(source="/srv/cache/app", target="/cache", read_only=False)]
    assert mount_problems(mounts, allowed, env="ci", field="build.mounts") == []


def test_the_environment_block_refuses_to_allow_the_docker_socket() -> None:
    with pytest.raises(ValidationError, match="can never be mounted"):
        ShiplineEnvironment(work_pool="prod", host_mounts=[HostMount(path="/var/run/docker.sock")])
    with pytest.raises(ValidationError, match="/ itself can never be mounted"):
        ShiplineEnvironment(work_pool="prod", host_mounts=[{"path": "/", "read_write": True}])


def test_by_default_an_environment_allows_the_hosts_java_read_only() -> None:
    block = ShiplineEnvironment(work_pool="pre")
    assert [(m.path, m.read_write) for m in block.host_mounts] == [
        ("/usr/lib/jvm", False),
        ("/etc/java-17-openjdk", False),
    ]
