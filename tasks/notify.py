"""Task: tell the configured channels about a release's outcome."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.core import Block

from shipline.release.notify import Delivery, ReleaseNotice, notify_blocks


@task
def send_release_notice(notice: ReleaseNotice, block_names: list[str]) -> list[Delivery]:
    """Send the notice through each named notification block; an undeliverable one is a warning."""
    logger = get_run_logger()
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
    for delivery in deliveries:
        if delivery.error:
            logger.warning("notice to %s not delivered: %s", delivery.channel, delivery.error)
    return deliveries
