"""Task: the OS and middleware layers of an app's image, reused from the registry or built once."""

from __future__ import annotations

from prefect import get_run_logger, task
from pydantic import BaseModel

from shipline.config import load_settings
from shipline.deploy import docker_client
from shipline.images import PushedImage, ensure_middleware_image, ensure_os_image, rebase_app_image
from shipline.retries import retry_if_transient
from shipline.spec import ImageSpec


class BaseLayers(BaseModel):
    os: PushedImage
    middleware: PushedImage


@task(retries=2, retry_delay_seconds=[5, 20], retry_condition_fn=retry_if_transient)
def prepare_base_layers(image: ImageSpec, rebuild: bool = False) -> BaseLayers:
    """Reuse the OS and middleware images from the registry, or build and push the missing ones."""
    settings, logger = load_settings(), get_run_logger()
    client = docker_client(settings.docker_url)
    os_image = ensure_os_image(
        client,
        registry=settings.registry_address,
        layer=image.os,
        cache_dir=settings.home / "cache" / "rootfs",
        mirror=settings.debian_mirror,
        log=logger.info,
        rebuild=rebuild,
    )
    middleware = ensure_middleware_image(
        client,
        registry=settings.registry_address,
        layer=image.middleware,
        os_image=os_image,
        log=logger.info,
        rebuild=rebuild,
    )
    return BaseLayers(os=os_image, middleware=middleware)


@task(retries=1, retry_delay_seconds=10, retry_condition_fn=retry_if_transient)
def rebase_app(app_image: str, middleware: PushedImage) -> PushedImage:
    """Move an app image (by digest) onto new middleware without recompiling; tag it {sha}-{middleware}."""
    settings = load_settings()
    client = docker_client(settings.docker_url)
    sha = client.images.pull(app_image).labels.get("org.opencontainers.image.revision", "unknown")
    tag = f"{sha}-{middleware.tag}"
    return rebase_app_image(
        client,
        registry=settings.registry_address,
        app_image=app_image,
        middleware=middleware,
        tag=tag,
        log=get_run_logger().info,
    )
