"""Commit statuses of a delivery on GitLab: one per stage, ``shipline/<stage>``, following the run.

``pending`` for every stage when the delivery knows its commit, ``running`` when a stage starts,
``success``/``failed`` when it ends, ``canceled`` for the stages a failure left unrun; each links to the
delivery's flow run. A status that cannot be delivered is a warning in the run's log, never a failed
delivery.

The delivery flow opens ``reporting_to_gitlab(...)`` around its stages; each stage task carries
``STAGE_HOOKS`` (Prefect task state hooks), which find the open reporter of their flow run through a
context variable. A stage is named after its task (``STAGES``); the release tasks are named
``release-to-{env}`` and report as ``shipline/{env}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from shipline.apps import OnboardedApp, get_app
from shipline.config import load_settings
from shipline.errors import NotifyError
from shipline.etcd_client import connect
from shipline.gitlab.api import GitLabProject, StatusState

STAGES = {
    "prepare_base_layers": "base-layers",
    "compile_app": "build",
    "run_unit_tests": "unit-test",
    "scan_source": "scan",
    "build_app_layer": "image",
    "push_app_image": "push",
}
"""Build stage tasks and the status each reports, in the order they run."""
RELEASE_TASK = "release-to-"

Warn = Callable[[str], None]


class CommitStatuses:
    """The statuses of one commit, posted as ``shipline/<stage>`` with a link to the run."""

    def __init__(self, project: GitLabProject, sha: str, *, target_url: str, warn: Warn) -> None:
        self.project, self.sha, self.target_url, self.warn = project, sha, target_url, warn
        self.states: dict[str, StatusState] = {}

    def set(self, stage: str, state: StatusState) -> None:
        """Post ``state`` for ``stage``; a refusal is a warning."""
        self.states[stage] = state
        try:
            self.project.set_commit_status(
                self.sha,
                name=f"shipline/{stage}",
                state=state,
                target_url=self.target_url,
                description=f"{stage}: {state}",
            )
        except NotifyError as exc:
            self.warn(f"commit status shipline/{stage} {state} not delivered: {exc.message}")


_reporting: ContextVar[CommitStatuses | None] = ContextVar("shipline_commit_statuses", default=None)


@contextmanager
def reporting_to_gitlab(statuses: CommitStatuses | None, stages: Sequence[str]) -> Iterator[None]:
    """Report ``stages`` of the run on GitLab while the block runs (nothing when ``statuses`` is None)."""
    if statuses is None:
        yield
        return
    for stage in stages:
        statuses.set(stage, "pending")
    token = _reporting.set(statuses)
    try:
        yield
    finally:
        _reporting.reset(token)
        for stage in stages:
            if statuses.states.get(stage) == "pending":
                statuses.set(stage, "canceled")


def stage_of(task_name: str, task_run_name: str) -> str | None:
    """The status a task reports, or None for a task that is not a stage."""
    if task_run_name.startswith(RELEASE_TASK):
        return task_run_name.removeprefix(RELEASE_TASK)
    return STAGES.get(task_name)


def report_stage(task: Any, task_run: Any, state: Any) -> None:
    """Prefect task hook: the task's stage status follows its state (running, success, failed)."""
    statuses = _reporting.get()
    stage = stage_of(task.name, task_run.name)
    if statuses is None or stage is None:
        return
    if state.is_running():
        statuses.set(stage, "running")
    elif state.is_completed():
        statuses.set(stage, "success")
    elif state.is_failed() or state.is_crashed():
        statuses.set(stage, "failed")


STAGE_HOOKS: dict[str, Any] = {
    "on_running": [report_stage],
    "on_completion": [report_stage],
    "on_failure": [report_stage],
}
"""Keyword arguments of ``@task`` for a stage that reports its status."""


def project_of_app(app: str) -> GitLabProject | None:
    """The GitLab project ``app`` is onboarded from, reached with the GitLab block; None without either."""
    from blocks.gitlab import ShiplineGitLab

    gitlab = ShiplineGitLab.configured()
    if gitlab is None:
        return None

    async def read() -> OnboardedApp | None:
        async with connect(load_settings().etcd_url) as client:
            return await get_app(client, app)

    onboarded = asyncio.run(read())
    if onboarded is None or onboarded.project is None:
        return None
    return gitlab.project(onboarded.project)


def flow_run_url() -> str:
    """The Prefect UI page of the current flow run."""
    from prefect.runtime import flow_run
    from prefect.settings import PREFECT_UI_URL

    return f"{PREFECT_UI_URL.value()}/runs/flow-run/{flow_run.get_id()}"


def commit_statuses(app: str, sha: str) -> CommitStatuses | None:
    """The reporter for ``sha`` of ``app`` in the current flow run, or None without a GitLab project.

    An app reports to GitLab when a ``shipline-gitlab`` block exists and the app is onboarded from a
    GitLab project — whatever started the delivery (a webhook, ``shipline run``, the UI).
    """
    from prefect import get_run_logger

    project = project_of_app(app)
    if project is None:
        return None
    return CommitStatuses(project, sha, target_url=flow_run_url(), warn=get_run_logger().warning)
