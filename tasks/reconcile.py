"""Task: deliver an onboarded app's branch head if its push event was lost."""

from __future__ import annotations

from prefect import get_run_logger, task

from blocks.gitlab import ShiplineGitLab
from shipline.apps import OnboardedApp
from shipline.config import load_settings
from shipline.gitlab.reconcile import HeadCheck, deliver_missed_head
from shipline.onboarding import onboarded_apps
from shipline.retries import retry_if_transient


@task
def gitlab_apps() -> list[OnboardedApp]:
    """The onboarded apps that live in a GitLab project (none without a shipline-gitlab block)."""
    if ShiplineGitLab.configured() is None:
        get_run_logger().info("no shipline-gitlab/default block: nothing to reconcile")
        return []
    return [a for a in onboarded_apps(etcd_url=load_settings().etcd_url) if a.project]


@task(
    task_run_name="reconcile-{app.app}",
    retries=1,
    retry_delay_seconds=10,
    retry_condition_fn=retry_if_transient,
)
def reconcile_head(app: OnboardedApp) -> HeadCheck:
    """Ask GitLab for the app's delivery-branch head; start a delivery unless that commit has one."""
    gitlab = ShiplineGitLab.configured()
    assert gitlab is not None and app.project is not None
    check = deliver_missed_head(
        app, gitlab.project(app.project), prefect_api_url=load_settings().prefect_api_url
    )
    get_run_logger().info(
        "%s %s@%s: %s (%s)", app.app, app.branch, check.sha[:12], check.outcome, check.flow_run
    )
    return check
