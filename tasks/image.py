"""Tasks: the app layer on top of the middleware, and its push to the registry."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from blocks.registry import ShiplineRegistry
from shipline.build import app_image
from shipline.build.app_image import BuiltImage
from shipline.build.registry import PushedImage
from shipline.config import load_settings
from shipline.gitlab.statuses import STAGE_HOOKS
from shipline.retries import retry_if_transient
from shipline.spec import AppSpec
from tasks.base_images import BaseLayers


@task(task_run_name="image: {spec.app}", **STAGE_HOOKS)
def build_app_layer(
    spec: AppSpec,
    artifact: Path,
    workspace: Path,
    middleware: PushedImage,
    sha: str,
    committed: datetime,
    source: str,
) -> BuiltImage:
    """Assemble apps/{app}:{sha}: the artifact as one layer on the middleware, reproducibly (commit time)."""
    registry = ShiplineRegistry.current().registry()
    labels = app_image.app_labels(
        app=spec.app,
        sha=sha,
        source=source,
        committed=committed,
        middleware=middleware,
        copy_to=spec.image.copy_artifact_to,
    )
    return app_image.build(
        registry,
        repository=registry.app_repository(spec.app),
        tag=sha,
        artifact=artifact,
        workspace=workspace,
        copy_to=spec.image.copy_artifact_to,
        workdir=spec.image.workdir,
        command=spec.image.command,
        labels=labels,
        created=committed,
        middleware=middleware,
        directory=load_settings().home / "images" / str(flow_run.get_id() or "adhoc"),
        log=get_run_logger().info,
    )


@task(
    task_run_name="push: {spec.app}",
    retries=3,
    retry_delay_seconds=[2, 5, 15],
    retry_condition_fn=retry_if_transient,
    **STAGE_HOOKS,
)
def push_app_image(spec: AppSpec, built: BuiltImage, layers: BaseLayers) -> PushedImage:
    """Push the app image blob by blob (what the registry has is not sent again); then drop the local copy.

    Its artifact names the image by digest and the base layers' digests it was built on.
    """
    registry = ShiplineRegistry.current().registry()
    pushed = app_image.push(registry, built, get_run_logger().info)
    shutil.rmtree(built.directory, ignore_errors=True)
    create_markdown_artifact(
        key=f"image-{spec.app}",
        markdown=f"### {spec.app} image\n\n`{pushed.by_digest}`\n\ntag `{pushed.tag}`\n\n"
        f"built on\n\n{layers.provenance()}",
        description="The image every environment deploys, by digest, and the base layers it was built on",
    )
    return pushed
