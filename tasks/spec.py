"""Task: read and validate the app's shipline.yaml before any work."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from prefect import get_run_logger, task

from blocks import ShiplineEnvironment
from shipline.apps import OnboardedApp, bind_to_repository
from shipline.build.check import plain_secret_notes
from shipline.capabilities import capability_problems
from shipline.config import load_settings
from shipline.errors import SpecError
from shipline.etcd_client import connect
from shipline.mounts import mount_problems
from shipline.spec import AppSpec, load_spec


@task
def read_app_spec(
    workspace: Path, environments: Sequence[str] = ("pre", "prod"), source: str | None = None
) -> AppSpec:
    """Validate shipline.yaml; a bad spec fails here, naming each field and line.

    Its host mounts must be allowed by the operators: ``build.mounts`` by the ``ci`` environment's block,
    ``service.mounts`` by the block of each environment in ``environments``; and so must the capabilities
    its instances ask for (``service.capabilities``, each block's ``allowed_capabilities``). The app it
    names must be bound to ``source``, the repository delivered (an app never onboarded is bound by its
    first delivery).
    """
    spec = load_spec(workspace)
    home = load_settings().home
    problems = []
    if spec.build.mounts:
        allowed = ShiplineEnvironment.for_env("ci").host_mounts
        problems += mount_problems(spec.build.mounts, allowed, env="ci", field="build.mounts", home=home)
    for env in environments if spec.service.mounts or spec.service.capabilities else ():
        block = ShiplineEnvironment.for_env(env)
        problems += mount_problems(
            spec.service.mounts, block.host_mounts, env=env, field="service.mounts", home=home
        )
        problems += capability_problems(
            spec.service.capabilities, block.allowed_capabilities, env=env, field="service.capabilities"
        )
    if problems:
        raise SpecError(f"shipline.yaml: {'; '.join(problems)}")
    logger = get_run_logger()
    if source is not None:
        bound = bind_app(spec.app, source)
        logger.info("app %s belongs to %s (bound by %s)", spec.app, bound.repository, bound.bound_by)
    logger.info(
        "app %s: %s on %s/%s", spec.app, spec.image.middleware.name, spec.image.os.name, spec.image.os.version
    )
    for note in plain_secret_notes(spec):
        logger.warning(note)
    return spec


def bind_app(app: str, source: str) -> OnboardedApp:
    """The app's binding to ``source``, made if it has none.

    Raises:
        SpecError: the app is bound to another repository.
    """

    async def bind() -> OnboardedApp:
        async with connect(load_settings().etcd_url) as client:
            return await bind_to_repository(client, app, source)

    return asyncio.run(bind())
