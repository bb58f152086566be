"""Task: check out the exact commit a run delivers, into a workspace of the run's own."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.runtime import flow_run
from pydantic import SecretStr

from blocks.gitlab import ShiplineGitLab
from shipline.build.checkout import CheckoutResult, checkout
from shipline.config import load_settings
from shipline.retries import retry_if_transient


def _gitlab_token(source: str) -> SecretStr | None:
    gitlab = ShiplineGitLab.configured()
    return gitlab.token_for(source) if gitlab is not None else None  # only to the GitLab's own host


@task(retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=retry_if_transient)
def checkout_source(source: str, ref: str | None) -> CheckoutResult:
    """Fetch one commit of the app's repository (shallow) into this run's workspace."""
    workspace = load_settings().workspaces_dir / str(flow_run.get_id() or "adhoc")
    token = _gitlab_token(source)
    result = checkout(source, ref=ref, workspace=workspace, token=token)
    get_run_logger().info("checked out %s at %s into %s", result.ref, result.sha, result.workspace)
    return result
