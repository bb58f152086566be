"""Telling people about a release: Prefect notification blocks, and GitLab's commit status and comment.

A notification that cannot be delivered never undoes a release; it is reported (``Delivery.error``) so
that the calling task logs it as a warning and shows it in the run's artifact.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Literal

import gitlab
from gitlab.exceptions import GitlabError
from prefect.blocks.abstract import NotificationBlock
from prefect.utilities.asyncutils import run_coro_as_sync
from pydantic import BaseModel, SecretStr

from shipline.errors import NotifyError

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
    detail: str = ""

    @property
    def subject(self) -> str:
        words = {"running": "deploying", "success": "released", "failed": "failed"}
        return f"{self.app} {words[self.outcome]} in {self.env}"

    @property
    def body(self) -> str:
        lines = [
            f"**{self.subject}**" + (f" (release {self.release})" if self.release else ""),
            f"- image: `{self.digest}`",
            f"- commit: `{self.sha}`",
        ]
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


def report_to_gitlab(
    *, url: str, token: SecretStr, project: str, notice: ReleaseNotice, comment: bool = True
) -> None:
    """Set the commit status ``shipline/{env}`` on ``notice.sha`` and, if ``comment``, add a commit comment.

    Args:
        url: GitLab base URL.
        token: Token allowed to set statuses and comment.
        project: Project id or path (``group/app``).
        notice: What to report.
        comment: Also comment on the commit (done for final outcomes, not for "running").

    Raises:
        NotifyError: carrying GitLab's response code and message.
    """
    client = gitlab.Gitlab(url, private_token=token.get_secret_value(), timeout=10)
    commit = client.projects.get(project, lazy=True).commits.get(notice.sha, lazy=True)
    status = {
        "state": notice.outcome,
        "name": f"shipline/{notice.env}",
        "description": notice.subject[:140],
    }
    if notice.run_url:
        status["target_url"] = notice.run_url
    try:
        commit.statuses.create(status)
        if comment:
            commit.comments.create({"note": notice.body})
    except GitlabError as exc:
        raise NotifyError(
            f"GitLab {url} refused the report on {project}@{notice.sha[:12]}: "
            f"{exc.response_code} {exc.error_message}",
            hint="check the shipline-gitlab block's token (it needs the api scope)",
            transient=(exc.response_code or 0) >= 500,
        ) from exc
