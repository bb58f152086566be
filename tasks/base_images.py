"""Task: the OS and middleware layers of an app's image, reused from the registry or built once."""

from __future__ import annotations

import shutil

from prefect import get_run_logger, task
from prefect.runtime import flow_run
from pydantic import BaseModel

from blocks.registry import ShiplineRegistry
from shipline.build import app_image
from shipline.build.images import ensure_middleware_image, ensure_os_image
from shipline.build.registry import PushedImage
from shipline.config import load_settings
from shipline.gitlab.statuses import STAGE_HOOKS
from shipline.retries import retry_if_transient
from shipline.spec import ImageSpec


class BaseLayers(BaseModel):
    os: PushedImage
    middleware: PushedImage


@task(
    task_run_name="base-layers: {image.middleware.name}-{image.middleware.version}",
    retries=2,
    retry_delay_seconds=[5, 20],
    retry_condition_fn=retry_if_transient,
    **STAGE_HOOKS,
)
def prepare_base_layers(image: ImageSpec, rebuild: bool = False) -> BaseLayers:
    """Reuse the OS and middleware images from the registry, or build and push the missing ones."""
    settings, logger, block = load_settings(), get_run_logger(), ShiplineRegistry.current()
    client, registry = block.docker_client(settings.docker_url), block.registry()
    os_image = ensure_os_image(
        client,
        registry=registry,
        layer=image.os,
        cache_dir=settings.home / "cache" / "rootfs",
        mirror=settings.debian_mirror,
        log=logger.info,
        rebuild=rebuild,
    )
    middleware = ensure_middleware_image(
        client, registry=registry, layer=image.middleware, os_image=os_image, log=logger.info, rebuild=rebuild
    )
    return BaseLayers(os=os_image, middleware=middleware)


@task(
    task_run_name="rebase: {app_image_by_digest}",
    retries=1,
    retry_delay_seconds=10,
    retry_condition_fn=retry_if_transient,
)
def rebase_app(app_image_by_digest: str, middleware: PushedImage) -> PushedImage:
    """Move an app image (by digest) onto new middleware without recompiling; tag it {sha}-{middleware}."""
    directory = load_settings().home / "images" / f"rebase-{flow_run.get_id() or 'adhoc'}"
    try:
        return app_image.rebase(
            ShiplineRegistry.current().registry(),
            app_image=app_image_by_digest,
            middleware=middleware,
            directory=directory,
            log=get_run_logger().info,
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
