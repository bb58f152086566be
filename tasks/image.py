"""Tasks: the app layer on top of the middleware, and its push to the registry."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from blocks.registry import ShiplineRegistry
from shipline.build.images import build_app_image
from shipline.build.registry import PushedImage, push_image
from shipline.config import load_settings
from shipline.gitlab.statuses import STAGE_HOOKS
from shipline.retries import retry_if_transient
from shipline.spec import AppSpec


@task(**STAGE_HOOKS)
def build_app_layer(spec: AppSpec, artifact: Path, middleware: PushedImage, sha: str, source: str) -> str:
    """Build apps/{app}:{sha}: the artifact on the middleware, with OCI labels; build output to the log."""
    registry = ShiplineRegistry.current()
    return build_app_image(
        registry.docker_client(load_settings().docker_url),
        registry=registry.registry(),
        app=spec.app,
        sha=sha,
        source=source,
        artifact=artifact,
        image=spec.image,
        middleware=middleware,
        log=get_run_logger().info,
    )


@task(retries=3, retry_delay_seconds=[2, 5, 15], retry_condition_fn=retry_if_transient, **STAGE_HOOKS)
def push_app_image(spec: AppSpec, sha: str) -> PushedImage:
    """Push the app image; a registry error inside the push stream fails (and is retried)."""
    registry = ShiplineRegistry.current()
    repository = registry.registry().app_repository(spec.app)
    client = registry.docker_client(load_settings().docker_url)
    pushed = push_image(client, repository, sha, get_run_logger().info)
    create_markdown_artifact(
        key=f"image-{spec.app}",
        markdown=f"### {spec.app} image\n\n`{pushed.by_digest}`\n\ntag `{sha}`\n",
        description="The image every environment deploys, by digest",
    )
    return pushed
