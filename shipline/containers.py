"""Running a command of the app's spec inside its middleware image, the runtime production uses."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import docker
from docker.errors import APIError, DockerException, ImageNotFound

from shipline.compose import Mount
from shipline.errors import BuildError

Log = Callable[[str], None]
WORKSPACE = "/workspace"


def run_in_image(
    client: docker.DockerClient,
    *,
    image: str,
    command: str,
    workspace: Path,
    mounts: list[Mount],
    log: Log,
    timeout: float = 3600,
) -> int:
    """Run ``sh -c command`` in ``image`` with the workspace mounted at /workspace; stream its output.

    Returns:
        The command's exit code.

    Raises:
        BuildError: if the container cannot run at all (missing image, engine error, timeout).
    """
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
        result = container.wait(timeout=timeout)
    except (APIError, DockerException) as exc:
        raise BuildError(f"{command!r} in {image} did not finish: {exc}", transient=True) from exc
    finally:
        with contextlib.suppress(APIError, DockerException):  # already gone: nothing left to clean up
            container.remove(force=True)
    return int(result.get("StatusCode", 1))
