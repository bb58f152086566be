"""Task: the OS and middleware layers of an app's image, reused from the registry or built once."""

from __future__ import annotations

from prefect import get_run_logger, task
from pydantic import BaseModel

from blocks.registry import ShiplineRegistry
from shipline.build.images import ensure_middleware_image, ensure_os_image, rebase_app_image
from shipline.build.registry import PushedImage
from shipline.config import load_settings
from shipline.gitlab.statuses import STAGE_HOOKS
from shipline.retries import retry_if_transient
from shipline.spec import ImageSpec


class BaseLayers(BaseModel):
    os: PushedImage
    middleware: PushedImage


@task(retries=2, retry_delay_seconds=[5, 20], retry_condition_fn=retry_if_transient, **STAGE_HOOKS)
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


@task(retries=1, retry_delay_seconds=10, retry_condition_fn=retry_if_transient)
def rebase_app(app_image: str, middleware: PushedImage) -> PushedImage:
    """Move an app image (by digest) onto new middleware without recompiling; tag it {sha}-{middleware}."""
    block = ShiplineRegistry.current()
    client = block.docker_client(load_settings().docker_url)
    sha = client.images.pull(app_image).labels.get("org.opencontainers.image.revision", "unknown")
    return rebase_app_image(
        client,
        registry=block.registry(),
        app_image=app_image,
        middleware=middleware,
        tag=f"{sha}-{middleware.tag}",
        log=get_run_logger().info,
    )
