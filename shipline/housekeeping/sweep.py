"""A whole housekeeping run in this process, step after step, as ``shipline housekeeping`` runs it.

The ``housekeeping`` flow runs the same steps as task runs (``tasks/housekeeping.py``). Each step fails on
its own: a registry that does not answer leaves the workspaces swept, and the failure is a row of the
table. Blob space is reclaimed last, only when images were deleted and the registry is this host's.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime

from shipline.build.registry import Registry
from shipline.config import Settings
from shipline.errors import ShiplineError
from shipline.flow_runs import unfinished_flow_runs
from shipline.housekeeping.files import RunStates, sweep_release_dirs, sweep_workspaces
from shipline.housekeeping.images import ImageDecision, ImagePlan, delete_images, plan_images, read_registry
from shipline.housekeeping.policy import HousekeepingPolicy
from shipline.housekeeping.report import Action, Item, Kind, removed_images
from shipline.release.lifecycle import all_releases
from shipline.stack.registry_maintenance import OFFLINE_STEPS, collect_blob_space, managed_registry

Log = Callable[[str], None]


def plan_image_collection(
    registry: Registry, *, etcd_url: str, keep: int, apps: Collection[str] | None = None
) -> ImagePlan:
    """Read the registry's app images and every release record, and decide what goes.

    Raises:
        ServiceUnavailableError, RegistryError: the registry or etcd does not answer, or refuses a read.
    """
    with registry.api() as api:
        contents = read_registry(api, apps=apps)
    return plan_images(contents, all_releases(etcd_url=etcd_url), keep=keep)


def collect_app_images(
    registry: Registry,
    app: str,
    decisions: Sequence[ImageDecision],
    *,
    keep: int,
    etcd_url: str,
    dry_run: bool,
    log: Log,
) -> list[Item]:
    """Delete the images of ``app`` its decisions chose, its releases read again just before.

    Raises:
        ServiceUnavailableError: the registry or etcd does not answer (a refused delete is a failed row).
    """
    releases_now = all_releases(etcd_url=etcd_url, app=app)
    with registry.api() as api:
        return delete_images(api, decisions, releases_now=releases_now, keep=keep, dry_run=dry_run, log=log)


def reclaim_blob_space(
    settings: Settings, registry: Registry, *, policy: HousekeepingPolicy, images_removed: int, log: Log
) -> Item:
    """Run the registry's blob collection when this run deleted images and the registry is this host's.

    Raises:
        StackError: the collection failed (the registry takes pushes again in any case).
    """

    def left(reason: str) -> Item:
        return Item(kind=Kind.BLOB_SPACE, name=registry.address, action=Action.KEPT, reason=reason)

    if policy.dry_run:
        return left("dry run: the registry's garbage-collect would free the images' bytes above")
    if images_removed == 0:
        return left("no image deleted: nothing to collect")
    if not policy.reclaim_blob_space:
        return left(f"reclaim_blob_space is off in the shipline-housekeeping block; {OFFLINE_STEPS}")
    if registry.address != settings.registry_address or not managed_registry(settings):
        return left(f"the registry is not the one this host's stack runs; {OFFLINE_STEPS}")
    done = collect_blob_space(settings, report=log)
    return Item(
        kind=Kind.BLOB_SPACE,
        name=registry.address,
        action=Action.REMOVED,
        reason=f"garbage-collect deleted {done.blobs_deleted} unreferenced blob(s); pushes waited "
        f"{done.read_only_seconds:.1f}s",
        bytes=done.freed,
    )


def failed_step(kind: Kind, name: str, message: str) -> Item:
    """The row of a step that failed as a whole."""
    return Item(kind=kind, name=name, action=Action.FAILED, reason=message)


def housekeep(
    settings: Settings,
    policy: HousekeepingPolicy,
    registry: Registry,
    *,
    apps: Collection[str] | None = None,
    log: Log = print,
    unfinished_runs: RunStates = unfinished_flow_runs,
    now: datetime | None = None,
) -> list[Item]:
    """Sweep workspaces and release directories, delete images, reclaim blob space; a row per thing.

    Args:
        settings: Where workspaces and release directories are, and etcd.
        policy: The operator's settings.
        registry: The registry whose app images are collected.
        apps: Only these apps' images (default: every app's).
        log: Receives one line per removal.
        unfinished_runs: Tells which workspaces' runs go on (Prefect).
        now: The time of the run (default: now).
    """
    now = now or datetime.now(UTC)
    items: list[Item] = []
    try:
        items += sweep_workspaces(
            settings.workspaces_dir,
            home=settings.home,
            now=now,
            retention_days=policy.workspace_retention_days,
            dry_run=policy.dry_run,
            log=log,
            unfinished_runs=unfinished_runs,
        )
    except ShiplineError as exc:
        items.append(failed_step(Kind.WORKSPACE, "workspaces", exc.message))
    try:
        items += sweep_release_dirs(
            settings.releases_dir,
            home=settings.home,
            now=now,
            retention_days=policy.release_dir_retention_days,
            releases=all_releases(etcd_url=settings.etcd_url),
            dry_run=policy.dry_run,
            log=log,
        )
    except ShiplineError as exc:
        items.append(failed_step(Kind.RELEASE_DIR, "releases", exc.message))
    try:
        plan = plan_image_collection(
            registry, etcd_url=settings.etcd_url, keep=policy.keep_images_per_app, apps=apps
        )
    except ShiplineError as exc:
        items.append(failed_step(Kind.IMAGE, registry.address, exc.message))
        return items
    items += plan.rows_of_untouched_apps()
    images: list[Item] = []
    for app, decisions in plan.apps_with_deletions().items():
        try:
            images += collect_app_images(
                registry,
                app,
                decisions,
                keep=plan.keep,
                etcd_url=settings.etcd_url,
                dry_run=policy.dry_run,
                log=log,
            )
        except ShiplineError as exc:
            images.append(failed_step(Kind.IMAGE, f"apps/{app}", exc.message))
    items += images
    try:
        removed = removed_images(items)
        items.append(reclaim_blob_space(settings, registry, policy=policy, images_removed=removed, log=log))
    except ShiplineError as exc:
        items.append(failed_step(Kind.BLOB_SPACE, registry.address, exc.message))
    return items
