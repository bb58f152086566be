"""Tasks: a release is cleared for traffic only once verified; clearances of other releases withdrawn."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from shipline.config import load_settings
from shipline.release import lifecycle
from shipline.release.history import Release
from shipline.retries import retry_if_transient


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=retry_if_transient)
def clear_for_traffic(release: Release) -> None:
    """The release passed its auto-tests on every instance: its registrators may now register them."""
    lifecycle.clear_for_traffic(release, etcd_url=load_settings().etcd_url)
    get_run_logger().info(
        "release %s of %s in %s cleared for traffic", release.number, release.app, release.env
    )


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=retry_if_transient)
def withdraw_traffic(app: str, env: str, *, only: set[int] | None = None, keep: int | None = None) -> int:
    """Withdraw clearances: a failed release's (``only``), or all but the live one's (``keep``)."""
    withdrawn = lifecycle.withdraw_traffic(app, env, etcd_url=load_settings().etcd_url, only=only, keep=keep)
    if withdrawn:
        get_run_logger().info("withdrew %d clearance(s) of %s in %s", withdrawn, app, env)
    return withdrawn
