"""Deliveries for the branch heads whose push event never arrived.

GitLab does not queue a webhook it could not deliver (the receiver was down), and a single push of more
than three branches or tags fires no push hook at all. So every few minutes the ``gitlab-reconcile`` flow
asks GitLab for each onboarded app's delivery-branch head and starts a delivery for a head that no event
and no earlier reconcile delivered. Its run carries the ``reconciled`` tag, so that the push event, should
it arrive after all, is answered with that run instead of starting a second one.
"""

from __future__ import annotations

import asyncio
from typing import Literal

import httpx
from pydantic import BaseModel

from shipline.apps import OnboardedApp
from shipline.gitlab.api import GitLabProject
from shipline.gitlab.events import Trigger
from shipline.gitlab.triggers import DeliveryStarter
from shipline.prefect_auth import environment_auth


class HeadCheck(BaseModel):
    """What the reconcile found for one app's branch head, and did about it."""

    app: str
    project: str
    branch: str
    sha: str
    outcome: Literal["started", "already delivered"]
    flow_run: str


def deliver_missed_head(app: OnboardedApp, project: GitLabProject, *, prefect_api_url: str) -> HeadCheck:
    """Start a delivery of ``app``'s branch head unless some run delivers that commit already.

    Raises:
        NotifyError: if GitLab does not tell the head.
        ServiceUnavailableError: if Prefect does not answer.
    """
    assert app.project is not None  # only apps onboarded from GitLab are reconciled
    sha = project.branch_head(app.branch)
    trigger = Trigger(kind="push", project=app.project, ref=app.branch, sha=sha)

    async def ensure() -> HeadCheck:
        async with httpx.AsyncClient(
            timeout=10.0, trust_env=False, auth=environment_auth(prefect_api_url)
        ) as client:
            starter = DeliveryStarter(prefect_api_url, client)
            existing = await starter.any_run(trigger)
            if existing is not None:
                outcome: Literal["started", "already delivered"] = "already delivered"
                run = existing
            else:
                outcome = "started"
                run = await starter.start(trigger, app, delivery_id=None, reconciled=True)
        return HeadCheck(
            app=app.app,
            project=app.project or "",
            branch=app.branch,
            sha=sha,
            outcome=outcome,
            flow_run=run.name,
        )

    return asyncio.run(ensure())
