"""Tasks: the app layer on top of the middleware, and its push to the registry."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from shipline.config import load_settings
from shipline.deploy import docker_client
from shipline.images import PushedImage, app_repository, build_app_image, push_image
from shipline.retries import retry_if_transient
from shipline.spec import AppSpec


@task
def build_app_layer(spec: AppSpec, artifact: Path, middleware: PushedImage, sha: str, source: str) -> str:
    """Build apps/{app}:{sha}: the artifact on the middleware, with OCI labels; build output to the log."""
    settings = load_settings()
    return build_app_image(
        docker_client(settings.docker_url),
        registry=settings.registry_address,
        app=spec.app,
        sha=sha,
        source=source,
        artifact=artifact,
        image=spec.image,
        middleware=middleware,
        log=get_run_logger().info,
    )


@task(retries=3, retry_delay_seconds=[2, 5, 15], retry_condition_fn=retry_if_transient)
def push_app_image(spec: AppSpec, sha: str) -> PushedImage:
    """Push the app image; a registry error inside the push stream fails (and is retried)."""
    settings = load_settings()
    repository = app_repository(settings.registry_address, spec.app)
    pushed = push_image(docker_client(settings.docker_url), repository, sha, get_run_logger().info)
    create_markdown_artifact(
        key=f"image-{spec.app}",
        markdown=f"### {spec.app} image\n\n`{pushed.by_digest}`\n\ntag `{sha}`\n",
        description="The image every environment deploys, by digest",
    )
    return pushed
