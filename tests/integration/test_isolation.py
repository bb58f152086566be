"""The powers of containers on the real engine: job containers run as the block's non-root user on a
read-only root, without network unless the block gives them the host's; app instances from the rendered
compose file have no capability but those allowed, gain no privilege and live under the block's pids limit.
"""

from __future__ import annotations

from pathlib import Path

import docker
import pytest
from prefect.logging import disable_run_logger

from blocks import ShiplineEnvironment
from shipline.config import Settings
from shipline.docker import docker_client, run_in_image
from shipline.errors import DeployError
from shipline.release.autotest import in_release_image
from shipline.release.compose import ComposeFile, compose_file_for, render_compose
from shipline.release.deploy import compose_up, wait_healthy
from shipline.release.plan import ReleaseRequest
from shipline.spec import ServiceSpec
from tasks.deploy import wait_for_health
from tests.images import busybox_web_image, free_ports, write

CI = ShiplineEnvironment(work_pool="ci")
"""The ci block as `shipline up` saves it: every default."""


@pytest.fixture(scope="module")
def client(settings: Settings) -> docker.DockerClient:
    return docker_client(settings.docker_url)


@pytest.fixture(scope="module")
def web(settings: Settings, client: docker.DockerClient) -> tuple[str, str]:
    repository = f"{settings.registry_address}/apps/isolationtest"
    return repository, busybox_web_image(client, repository, "v1", {"healthz": "ok\n"})


@pytest.fixture(scope="module")
def image(web: tuple[str, str]) -> str:
    return f"{web[0]}@{web[1]}"


def test_a_build_as_the_job_user_writes_its_workspace_and_tmp_but_not_the_root_nor_git(
    client: docker.DockerClient, image: str, tmp_path: Path
) -> None:
    workspace = tmp_path / "checkout"  # as the checkout leaves it: root's files, a .git
    (workspace / "src").mkdir(parents=True)
    (workspace / "src" / "main.txt").write_text("source\n")
    (workspace / ".git").mkdir()
    (workspace / ".git" / "config").write_text("[core]\n")
    done = run_in_image(
        client,
        image=image,
        command="id -u; id -g; "
        "mkdir -p out && cat src/main.txt > out/artifact.txt && echo built; "
        "echo more >> src/main.txt && echo edited; "
        "touch /etc/built 2>/dev/null && echo root-written || echo root-read-only; "
        "echo scratch > /tmp/scratch && echo tmp-written; "
        "(echo '[alias]' >> .git/config) 2>/dev/null && echo git-written || echo git-read-only",
        workspace=workspace,
        mounts=[],
        log=print,
        timeout=60,
        resources=CI.job_resources("ci"),
        user=CI.job_user,
        network=CI.job_network,
    )
    assert done.code == 0, done
    assert done.tail == (
        "65534",
        "65534",
        "built",
        "edited",
        "root-read-only",
        "tmp-written",
        "git-read-only",
    )
    artifact = workspace / "out" / "artifact.txt"
    assert artifact.read_text() == "source\n" and artifact.stat().st_uid == 65534
    assert (workspace / "src" / "main.txt").read_text() == "source\nmore\n"
    assert (workspace / "src" / "main.txt").stat().st_uid == 0  # the checkout stays root's
    assert (workspace / ".git" / "config").read_text() == "[core]\n"


def test_the_block_chooses_the_job_user(client: docker.DockerClient, image: str, tmp_path: Path) -> None:
    block = ShiplineEnvironment(work_pool="ci", job_uid=4321, job_gid=1234)
    done = run_in_image(
        client,
        image=image,
        command="id -u; id -g; echo x > made && echo wrote",
        workspace=tmp_path,
        mounts=[],
        log=print,
        timeout=60,
        user=block.job_user,
    )
    assert done.tail == ("4321", "1234", "wrote"), done
    assert (tmp_path / "made").stat().st_uid == 4321


def reach_command(settings: Settings) -> str:
    """Try etcd and the Prefect API on the host's loopback; one line per service: reached or unreachable."""
    urls = [
        f"http://{settings.host}:{settings.etcd_port}/version",
        f"http://{settings.host}:{settings.prefect_port}/api/health",
    ]
    # No -T: busybox 1.35's wget crashes with a timeout; a refused connection ends at once.
    return "; ".join(
        f"wget -q -O /dev/null {url} 2>/dev/null && echo reached || echo unreachable" for url in urls
    )


def test_a_job_without_network_reaches_no_service_of_the_host_and_the_blocks_host_network_does(
    settings: Settings, client: docker.DockerClient, image: str, tmp_path: Path
) -> None:
    assert CI.job_network == "none"
    isolated = run_in_image(
        client,
        image=image,
        command=f"{reach_command(settings)}; cat /proc/net/dev",
        workspace=tmp_path,
        mounts=[],
        log=print,
        timeout=60,
        network=CI.job_network,
    )
    assert isolated.tail[:2] == ("unreachable", "unreachable"), isolated
    interfaces = [line.split(":")[0].strip() for line in isolated.tail[2:] if ":" in line]
    assert interfaces == ["lo"]  # no interface out of the container at all
    allowed = ShiplineEnvironment(work_pool="ci", job_network="host")
    connected = run_in_image(
        client,
        image=image,
        command=reach_command(settings),
        workspace=tmp_path,
        mounts=[],
        log=print,
        timeout=60,
        network=allowed.job_network,
    )
    assert connected.tail == ("reached", "reached"), connected


def test_auto_test_commands_get_the_memory_of_the_environment_they_run_in(
    client: docker.DockerClient, image: str
) -> None:
    pre = ShiplineEnvironment(work_pool="pre", job_memory="48m")
    run = in_release_image(client, image, print, resources=pre.job_resources("pre"), user=pre.job_user)
    read = run(
        [
            "sh",
            "-c",
            "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null; id -u",
        ],
        "http://127.0.0.1:1",
        30,
    )
    assert read.tail == (str(48 * 2**20), "65534"), read
    hungry = run(["sh", "-c", "dd if=/dev/zero of=/dev/null bs=128M count=1"], "http://127.0.0.1:1", 30)
    assert hungry.code == 137
    assert hungry.tail[-1] == (
        "killed: out of memory at 48m, the job's memory limit "
        "(job_memory of the shipline-environment block 'pre')"
    )


def compose_file(
    app: str,
    web: tuple[str, str],
    release: int,
    *,
    pids_limit: int = 77,
    allowed: tuple[str, ...] = (),
    **service: object,
) -> ComposeFile:
    request = ReleaseRequest(
        app=app,
        env="pre",
        image=web[0],
        digest=web[1],
        sha="a" * 40,
        service=ServiceSpec.model_validate({"stop_grace_seconds": 1, **service}),
    )
    return compose_file_for(
        request, release, free_ports(1), pids_limit=pids_limit, allowed_capabilities=allowed
    )


def start(settings: Settings, tmp_path: Path, compose: ComposeFile) -> None:
    path = write(tmp_path / f"release-{compose.release}.yml", render_compose(compose))
    compose_up(path, project=compose.project, services=compose.service_names, docker_host=settings.docker_url)


def status_of(client: docker.DockerClient, compose: ComposeFile) -> dict[str, str]:
    """The instance's /proc/1/status as a mapping, and its pids limit as its cgroup reports it."""
    labels = [
        f"com.docker.compose.project={compose.project}",
        f"com.docker.compose.service={compose.service_names[0]}",
    ]
    (container,) = client.containers.list(filters={"label": labels})
    status = container.exec_run(["cat", "/proc/1/status"]).output.decode()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    pids = container.exec_run(
        ["sh", "-c", "cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max 2>/dev/null"]
    )
    fields["pids.max"] = pids.output.decode().strip()
    fields["PidsLimit"] = str(container.attrs["HostConfig"]["PidsLimit"])
    return {key: value.strip() for key, value in fields.items()}


def test_an_instance_from_the_compose_file_has_no_capability_gains_no_privilege_and_has_its_pids_limit(
    settings: Settings, client: docker.DockerClient, web: tuple[str, str], app: str, tmp_path: Path
) -> None:
    plain = compose_file(app, web, 1, allowed=("NET_BIND_SERVICE",))  # allowed, not asked for: not given
    start(settings, tmp_path, plain)
    wait_healthy(host="127.0.0.1", ports=plain.ports, health_path="/healthz", timeout=30)  # it still serves
    status = status_of(client, plain)
    assert status["CapEff"] == status["CapPrm"] == status["CapBnd"] == "0000000000000000"
    assert status["NoNewPrivs"] == "1"
    assert status["pids.max"] == status["PidsLimit"] == "77"
    assert status["Uid"].split()[0] == "0"  # the image's user: root, without a capability


def test_an_instance_gets_the_capability_asked_for_and_allowed_and_the_specs_user(
    settings: Settings, client: docker.DockerClient, web: tuple[str, str], app: str, tmp_path: Path
) -> None:
    privileged = compose_file(
        app, web, 1, allowed=("NET_BIND_SERVICE",), capabilities=["NET_BIND_SERVICE", "NET_RAW"]
    )
    start(settings, tmp_path, privileged)
    status = status_of(client, privileged)
    assert status["CapEff"] == status["CapBnd"] == f"{1 << 10:016x}"  # CAP_NET_BIND_SERVICE is bit 10 only
    assert status["NoNewPrivs"] == "1"
    as_nobody = compose_file(app, web, 2, user="65534:65534")
    start(settings, tmp_path, as_nobody)
    wait_healthy(host="127.0.0.1", ports=as_nobody.ports, health_path="/healthz", timeout=30)
    status = status_of(client, as_nobody)
    assert status["Uid"].split()[:2] == ["65534", "65534"] and status["Gid"].split()[0] == "65534"
    assert status["CapEff"] == "0000000000000000"


def test_an_instance_at_its_pids_limit_fails_its_health_naming_the_block_field(
    settings: Settings, client: docker.DockerClient, app: str, tmp_path: Path
) -> None:
    # 15 sleeps and the shell that becomes httpd: 16 processes, the limit; httpd cannot fork per connection.
    forks = (
        "i=0; while [ $i -lt 15 ]; do sleep 300 & i=$((i+1)); done; exec httpd -f -p 127.0.0.1:$PORT -h /www"
    )
    repository = f"{settings.registry_address}/apps/isolationtest"
    crowded = busybox_web_image(
        client, repository, "crowded", {"healthz": "ok\n"}, command=["sh", "-c", forks]
    )
    compose = compose_file(app, (repository, crowded), 1, pids_limit=16, health_timeout_seconds=4)
    start(settings, tmp_path, compose)
    block = ShiplineEnvironment(work_pool="pre", instance_pids_limit=16)
    with disable_run_logger(), pytest.raises(DeployError) as caught:
        wait_for_health.fn(compose, block)
    assert f"not healthy within 4s at /healthz: 127.0.0.1:{compose.ports[0]}" in caught.value.message
    assert caught.value.message.endswith(
        f"{app}-pre-{app}-{compose.ports[0]}-1 is at its pids limit, 16 processes and threads "
        "(instance_pids_limit of the shipline-environment block 'pre')"
    )
