"""Task: tell the configured channels about a release's outcome, and GitLab about a PROD release."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.core import Block
from prefect.cache_policies import NO_CACHE

from shipline.config import load_settings
from shipline.errors import NotifyError
from shipline.gitlab.statuses import flow_run_url, project_of_app
from shipline.release.notify import Delivery, ReleaseNotice, notify_blocks


@task(cache_policy=NO_CACHE)
def send_release_notice(notice: ReleaseNotice, block_names: list[str]) -> list[Delivery]:
    """Send the notice through each named notification block; an undeliverable one is a warning.

    A successful PROD release of an app onboarded from GitLab also comments on its commit: what, where,
    which digest, and this run.
    """
    logger = get_run_logger()
    settings = load_settings()
    notice = notice.model_copy(
        update={
            "run_url": flow_run_url(),
            "where": settings.app_url(notice.app, notice.env),
        }
    )
    blocks: list[tuple[str, NotificationBlock]] = []
    for name in block_names:
        try:
            block = Block.load(name)
        except (ValueError, RuntimeError) as exc:
            logger.warning("notification block %s cannot be loaded: %s", name, exc)
            continue
        if isinstance(block, NotificationBlock):
            blocks.append((name, block))
        else:
            logger.warning("block %s is not a notification block", name)
    deliveries = notify_blocks(blocks, notice)
    if notice.outcome == "success" and notice.env == "prod" and (project := project_of_app(notice.app)):
        try:
            project.comment_on_commit(notice.sha, notice.body)
            deliveries.append(Delivery(channel=f"gitlab:{project.project}"))
        except NotifyError as exc:
            deliveries.append(Delivery(channel=f"gitlab:{project.project}", error=exc.message))
    for delivery in deliveries:
        if delivery.error:
            logger.warning("notice to %s not delivered: %s", delivery.channel, delivery.error)
    return deliveries
