"""Job containers on the real engine: the limits every build, test and auto-test command gets really hold."""

from __future__ import annotations

import time
from pathlib import Path

import docker
import pytest

from shipline.config import Settings
from shipline.docker import JobResources, docker_client, run_in_image
from shipline.release.autotest import in_release_image
from tests.images import busybox_web_image


@pytest.fixture(scope="module")
def client(settings: Settings) -> docker.DockerClient:
    return docker_client(settings.docker_url)


@pytest.fixture(scope="module")
def image(settings: Settings, client: docker.DockerClient) -> str:
    repository = f"{settings.registry_address}/apps/jobtest"
    return f"{repository}@{busybox_web_image(client, repository, 'v1', {'healthz': 'ok'})}"


def test_a_command_that_hangs_is_killed_at_its_time_limit(
    client: docker.DockerClient, image: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    done = run_in_image(
        client,
        image=image,
        command="echo begun; sleep 600",
        workspace=tmp_path,
        mounts=[],
        log=print,
        timeout=3,
    )
    assert time.monotonic() - started < 30
    assert done.code == 124
    assert done.tail[0] == "begun" and "killed after 3s" in done.tail[-1]


def test_a_fork_bomb_meets_the_pids_limit_not_the_host(
    client: docker.DockerClient, image: str, tmp_path: Path
) -> None:
    assert client.info().get("PidsLimit"), (
        "this engine cannot limit pids: a fork bomb test would harm the host"
    )
    done = run_in_image(
        client,
        image=image,
        command="bomb() { bomb | bomb & }; bomb; sleep 2; echo still here",
        workspace=tmp_path,
        mounts=[],
        log=lambda line: None,
        timeout=20,
    )
    # It ends — by itself, at its time limit, or with the shell's own exit 2 when even its `sleep` cannot
    # fork (more likely as a non-root job user) — and the host is untouched.
    assert done.code in (0, 2, 124), done
    assert any("can't fork" in line or "Resource temporarily unavailable" in line for line in done.tail) or (
        done.tail and done.tail[-1] == "still here"
    ), done


def test_job_containers_have_no_capability(client: docker.DockerClient, image: str, tmp_path: Path) -> None:
    done = run_in_image(
        client,
        image=image,
        # stderr left out: Docker does not keep the order of lines across stdout and stderr
        command="grep CapEff /proc/self/status; "
        "mknod /workspace/dev c 1 3 2>/dev/null && echo made || echo refused",
        workspace=tmp_path,
        mounts=[],
        log=print,
        timeout=30,
    )
    assert "CapEff:\t0000000000000000" in done.tail
    assert done.tail[-1] == "refused"


def test_an_auto_test_command_runs_as_nobody_in_the_release_image(
    client: docker.DockerClient, image: str
) -> None:
    said: list[str] = []
    run = in_release_image(client, image, said.append)
    done = run(
        ["sh", "-c", 'id -u; echo "$BASE_URL"; touch /x 2>/dev/null || echo read-only; env | wc -l'],
        "http://127.0.0.1:1",
        30,
    )
    assert done.code == 0, done
    assert done.tail[0] == "65534" and done.tail[1] == "http://127.0.0.1:1" and done.tail[2] == "read-only"
    assert int(done.tail[3]) < 8  # BASE_URL, PATH, HOME, HOSTNAME…: nothing of the worker's environment
    assert said[0].startswith("$ sh -c") and f"(in {image}" in said[0]
    slow = run(["sleep", "60"], "http://127.0.0.1:1", 2)
    assert slow.code == 124


def test_a_job_past_its_environments_memory_is_killed_and_says_which_setting_to_raise(
    client: docker.DockerClient, image: str, tmp_path: Path
) -> None:
    limit = JobResources(memory="32m", cpus=1.0, where="job_memory of the shipline-environment block 'ci'")
    done = run_in_image(
        client,
        image=image,
        command="echo begun; dd if=/dev/zero of=/dev/null bs=256M count=1 && echo survived",
        workspace=tmp_path,
        mounts=[],
        log=print,
        timeout=60,
        resources=limit,
    )
    assert done.code == 137, done  # SIGKILL from the kernel's OOM killer
    assert done.tail[0] == "begun" and "survived" not in done.tail
    assert done.tail[-1] == (
        "killed: out of memory at 32m, the job's memory limit "
        "(job_memory of the shipline-environment block 'ci')"
    )


def test_a_job_within_its_memory_runs_with_the_environments_cpus(
    client: docker.DockerClient, image: str, tmp_path: Path
) -> None:
    limit = JobResources(memory="64m", cpus=0.5, where="job_memory of the shipline-environment block 'ci'")
    done = run_in_image(
        client,
        image=image,
        command="cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu.max 2>/dev/null; "
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null; echo done",
        workspace=tmp_path,
        mounts=[],
        log=print,
        timeout=60,
        resources=limit,
    )
    assert done.code == 0, done
    seen = " ".join(done.tail)
    assert "50000" in seen  # half a CPU: 50 ms per 100 ms period (cgroup v1 quota, or v2's cpu.max)
    assert str(64 * 1024 * 1024) in seen
    assert done.tail[-1] == "done"
