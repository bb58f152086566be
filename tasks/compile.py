"""Task: the spec's build command inside the middleware image."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from blocks.environment import ShiplineEnvironment
from blocks.registry import ShiplineRegistry
from shipline.build.registry import PushedImage
from shipline.config import load_settings
from shipline.docker import run_in_image
from shipline.errors import BuildError
from shipline.files import inside
from shipline.gitlab.statuses import STAGE_HOOKS
from shipline.spec import AppSpec


@task(task_run_name="build: {spec.app}", **STAGE_HOOKS)
def compile_app(spec: AppSpec, workspace: Path, middleware: PushedImage, sha: str) -> Path:
    """Run the build command with the workspace mounted; the declared artifact must exist afterwards."""
    logger = get_run_logger()
    command = f"export SHIPLINE_SHA={sha}; {spec.build.command}"
    ci = ShiplineEnvironment.for_env("ci")
    done = run_in_image(
        ShiplineRegistry.current().docker_client(load_settings().docker_url),
        image=middleware.by_digest,
        command=command,
        workspace=workspace,
        mounts=spec.build.mounts,
        resources=ci.job_resources("ci"),
        user=ci.job_user,
        network=ci.job_network,
        log=logger.info,
    )
    if done.code != 0:
        raise BuildError(
            f"{spec.app}: the build command exited {done.code}; its last lines:\n{done.tail_text()}\n"
            f"({ci.job_conditions('ci')})",
            hint="read this task's log for the whole output",
        )
    artifact = inside(workspace, spec.build.artifact, what="build.artifact")
    if not artifact.exists():
        raise BuildError(f"{spec.app}: the build left no {spec.build.artifact}", hint="check build.artifact")
    return artifact
