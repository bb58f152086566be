"""Telling people about a release through Prefect notification blocks (GitLab: ``shipline.gitlab``).

A notification that cannot be delivered never undoes a release; it is reported (``Delivery.error``) so
that the calling task logs it as a warning and shows it in the run's artifact.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Literal

from prefect.blocks.abstract import NotificationBlock
from prefect.utilities.asyncutils import run_coro_as_sync
from pydantic import BaseModel

Outcome = Literal["running", "success", "failed"]


class ReleaseNotice(BaseModel):
    """What happened to which image where, and where to read more."""

    app: str
    env: str
    outcome: Outcome
    digest: str
    sha: str
    release: int | None = None
    run_url: str | None = None
    where: str | None = None
    """Where the release answers (through nginx)."""
    detail: str = ""

    @property
    def subject(self) -> str:
        """One line; a good PRE release is the seed's "notify testers": ready to test, before PROD."""
        if self.outcome == "success" and self.env == "pre":
            return f"{self.app} ready to test in pre"
        words = {"running": "deploying", "success": "released", "failed": "failed"}
        return f"{self.app} {words[self.outcome]} in {self.env}"

    @property
    def body(self) -> str:
        lines = [
            f"**{self.subject}**" + (f" (release {self.release})" if self.release else ""),
            f"- image: `{self.digest}`",
            f"- commit: `{self.sha}`",
        ]
        if self.where:
            lines.append(f"- where: {self.where}")
        if self.run_url:
            lines.append(f"- run: {self.run_url}")
        if self.detail:
            lines.append(f"- {self.detail}")
        return "\n".join(lines)


class Delivery(BaseModel):
    """Where a notice went, and the error if it did not get there."""

    channel: str
    error: str | None = None


def notify_blocks(blocks: Sequence[tuple[str, NotificationBlock]], notice: ReleaseNotice) -> list[Delivery]:
    """Send ``notice`` through each named Prefect notification block (webhook, Slack, apprise …)."""
    deliveries = []
    for name, block in blocks:
        try:
            sent = block.notify(body=notice.body, subject=notice.subject)
            if inspect.isawaitable(sent):  # an async-only block: drive it to completion here
                run_coro_as_sync(sent)
        except Exception as exc:  # any client library error: report it, the release stands
            deliveries.append(Delivery(channel=name, error=f"{type(exc).__name__}: {exc}"))
        else:
            deliveries.append(Delivery(channel=name))
    return deliveries
