"""Task: read and validate the app's shipline.yaml before any work."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prefect import get_run_logger, task

from blocks import ShiplineEnvironment
from shipline.build.check import plain_secret_notes
from shipline.config import load_settings
from shipline.errors import SpecError
from shipline.mounts import mount_problems
from shipline.spec import AppSpec, load_spec


@task
def read_app_spec(workspace: Path, environments: Sequence[str] = ("pre", "prod")) -> AppSpec:
    """Validate shipline.yaml; a bad spec fails here, naming each field and line.

    Its host mounts must be allowed by the operators: ``build.mounts`` by the ``ci`` environment's block,
    ``service.mounts`` by the block of each environment in ``environments``.
    """
    spec = load_spec(workspace)
    home = load_settings().home
    problems = []
    if spec.build.mounts:
        allowed = ShiplineEnvironment.for_env("ci").host_mounts
        problems += mount_problems(spec.build.mounts, allowed, env="ci", field="build.mounts", home=home)
    for env in environments if spec.service.mounts else ():
        allowed = ShiplineEnvironment.for_env(env).host_mounts
        problems += mount_problems(spec.service.mounts, allowed, env=env, field="service.mounts", home=home)
    if problems:
        raise SpecError(f"shipline.yaml: {'; '.join(problems)}")
    logger = get_run_logger()
    logger.info(
        "app %s: %s on %s/%s", spec.app, spec.image.middleware.name, spec.image.os.name, spec.image.os.version
    )
    for note in plain_secret_notes(spec):
        logger.warning(note)
    return spec
