"""Task: check out the exact commit a run delivers."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from pydantic import SecretStr

from shipline.checkout import CheckoutResult, checkout
from shipline.retries import retry_if_transient


@task(retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=retry_if_transient)
def checkout_source(
    source: str, ref: str | None, workspace: Path, token: SecretStr | None = None
) -> CheckoutResult:
    """Fetch one commit of the app's repository (shallow) into this run's workspace."""
    result = checkout(source, ref=ref, workspace=workspace, token=token)
    get_run_logger().info("checked out %s at %s into %s", result.ref, result.sha, result.workspace)
    return result
