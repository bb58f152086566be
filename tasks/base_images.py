"""Tasks: the OS and middleware layers of an app's image (reused or built once), their pending security
updates, and app images moved onto new layers."""

from __future__ import annotations

import re
import shutil

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run
from pydantic import BaseModel

from blocks.registry import ShiplineRegistry
from shipline.build import app_image
from shipline.build.base_layers import EtcdBaseLayerRecords
from shipline.build.images import ensure_middleware_image, ensure_os_image
from shipline.build.registry import PushedImage
from shipline.build.rootfs import DebianArchive
from shipline.build.security_updates import UpdatesReport, pending_updates
from shipline.config import load_settings
from shipline.gitlab.statuses import STAGE_HOOKS
from shipline.retries import retry_if_transient
from shipline.spec import ImageSpec


class BaseLayers(BaseModel):
    os: PushedImage
    middleware: PushedImage

    def provenance(self) -> str:
        """Markdown lines naming each base layer by the digest an app image is built on."""
        return "".join(
            f"- {kind} `{image.repository}:{image.tag}` as `{image.by_digest}`\n"
            for kind, image in (("OS", self.os), ("middleware", self.middleware))
        )


@task(
    task_run_name="base-layers: {image.middleware.name}-{image.middleware.version}",
    retries=2,
    retry_delay_seconds=[5, 20],
    retry_condition_fn=retry_if_transient,
    **STAGE_HOOKS,
)
def prepare_base_layers(image: ImageSpec, rebuild: bool = False) -> BaseLayers:
    """Reuse the OS and middleware images by the digests recorded when Shipline built them (never by a
    tag), or build, push and record the missing ones (all of them with ``rebuild``)."""
    settings, logger, block = load_settings(), get_run_logger(), ShiplineRegistry.current()
    client, registry = block.docker_client(settings.docker_url), block.registry()
    records = EtcdBaseLayerRecords(settings.etcd_url)
    os_image = ensure_os_image(
        client,
        registry=registry,
        records=records,
        layer=image.os,
        cache_dir=settings.home / "cache" / "rootfs",
        debian=DebianArchive.from_settings(settings),
        log=logger.info,
        warn=logger.warning,
        rebuild=rebuild,
    )
    middleware = ensure_middleware_image(
        client,
        registry=registry,
        records=records,
        layer=image.middleware,
        os_image=os_image,
        log=logger.info,
        warn=logger.warning,
        rebuild=rebuild,
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


@task(
    task_run_name="security-updates: {image.repository}:{image.tag}",
    retries=2,
    retry_delay_seconds=[10, 30],
    retry_condition_fn=retry_if_transient,
)
def report_security_updates(image: PushedImage) -> UpdatesReport:
    """Table artifact of the packages in a Debian base image with pending security updates."""
    settings = load_settings()
    report = pending_updates(ShiplineRegistry.current().docker_client(settings.docker_url), image.by_digest)
    rows = [
        {"package": u.package, "installed": u.installed, "candidate": u.candidate, "suite": u.origin}
        for u in report.security_updates
    ]
    create_table_artifact(
        key=security_updates_key(image),
        table=rows or [{"package": "(none)", "installed": "", "candidate": "", "suite": ""}],
        description=report.summary(),
    )
    get_run_logger().info(report.summary())
    return report


def security_updates_key(image: PushedImage) -> str:
    """The artifact key of an image's report: ``security-updates-{name}-{tag}``, dashes for the rest."""
    name = f"{image.repository.rsplit('/', 1)[-1]}-{image.tag}"
    return "security-updates-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
