"""Tasks of the housekeeping flow: read the policy, sweep files, plan and delete images, reclaim blob space.

Every task reads the world as it is now, so none is served from a cache: a run retried from the UI looks
again. Each is idempotent: what an interrupted attempt removed stays removed, and the next one goes on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from blocks.housekeeping import ShiplineHousekeeping
from blocks.registry import ShiplineRegistry
from shipline.config import load_settings
from shipline.housekeeping.files import sweep_release_dirs, sweep_workspaces
from shipline.housekeeping.images import ImageDecision, ImagePlan
from shipline.housekeeping.policy import HousekeepingPolicy
from shipline.housekeeping.report import Item, Kind
from shipline.housekeeping.sweep import collect_app_images, failed_step, plan_image_collection
from shipline.housekeeping.sweep import reclaim_blob_space as reclaim
from shipline.release.lifecycle import all_releases
from shipline.retries import retry_if_transient


def _log(line: str) -> None:
    get_run_logger().info(line)


@task(cache_policy=NO_CACHE)
def read_housekeeping_policy() -> HousekeepingPolicy:
    """Retentions, images kept per app and dry run, as the shipline-housekeeping/default block says now."""
    policy = ShiplineHousekeeping.current().policy()
    get_run_logger().info("policy: %s", policy.model_dump())
    return policy


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10, retry_condition_fn=retry_if_transient)
def remove_old_workspaces(policy: HousekeepingPolicy) -> list[Item]:
    """Remove the delivery workspaces past retention whose run is over (Prefect says which go on)."""
    settings = load_settings()
    return sweep_workspaces(
        settings.workspaces_dir,
        home=settings.home,
        now=datetime.now(UTC),
        retention_days=policy.workspace_retention_days,
        dry_run=policy.dry_run,
        log=_log,
    )


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10, retry_condition_fn=retry_if_transient)
def remove_old_release_dirs(policy: HousekeepingPolicy) -> list[Item]:
    """Remove the release directories past retention, except those of live or deploying releases."""
    settings = load_settings()
    return sweep_release_dirs(
        settings.releases_dir,
        home=settings.home,
        now=datetime.now(UTC),
        retention_days=policy.release_dir_retention_days,
        releases=all_releases(etcd_url=settings.etcd_url),
        dry_run=policy.dry_run,
        log=_log,
    )


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10, retry_condition_fn=retry_if_transient)
def plan_image_deletions(policy: HousekeepingPolicy, apps: list[str] | None) -> ImagePlan:
    """Read every app's images and release records; decide which images no release needs."""
    plan = plan_image_collection(
        ShiplineRegistry.current().registry(),
        etcd_url=load_settings().etcd_url,
        keep=policy.keep_images_per_app,
        apps=apps,
    )
    get_run_logger().info(
        "%d app(s), %d image(s) to delete, keeping per app every live one, the %d newest released and "
        "the %d newest pushed",
        len(plan.apps),
        plan.deletions,
        plan.keep,
        plan.keep,
    )
    return plan


@task(
    task_run_name="delete-images-{app}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=retry_if_transient,
)
def delete_app_images(app: str, decisions: list[ImageDecision], policy: HousekeepingPolicy) -> list[Item]:
    """Delete the app's images the plan chose, by digest, unless a release took one meanwhile."""
    return collect_app_images(
        ShiplineRegistry.current().registry(),
        app,
        decisions,
        keep=policy.keep_images_per_app,
        etcd_url=load_settings().etcd_url,
        dry_run=policy.dry_run,
        log=_log,
    )


@task(cache_policy=NO_CACHE)
def reclaim_blob_space(policy: HousekeepingPolicy, images_removed: int) -> Item:
    """Free the deleted images' space: the registry's garbage-collect, the registry read-only meanwhile."""
    return reclaim(
        load_settings(),
        ShiplineRegistry.current().registry(),
        policy=policy,
        images_removed=images_removed,
        log=_log,
    )


def rows_of(state: State[Any], kind: Kind, name: str) -> list[Item]:
    """The table rows of a step: what its task run returned, or one failed row naming the step."""
    if not state.is_completed():
        return [failed_step(kind, name, str(state.message))]
    result = state.result()
    if isinstance(result, ImagePlan):
        return result.rows_of_untouched_apps()  # the other apps' rows come from their delete task runs
    return list(result) if isinstance(result, list) else [result]
