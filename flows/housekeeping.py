"""Flow: remove old workspaces, release directories and app images; reclaim the registry's space."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_table_artifact

from shipline.errors import StageError
from shipline.housekeeping.report import Item, Kind, failures, removed_images, summary, table
from tasks.housekeeping import (
    delete_app_images,
    plan_image_deletions,
    read_housekeeping_policy,
    reclaim_blob_space,
    remove_old_release_dirs,
    remove_old_workspaces,
    rows_of,
)


@flow(name="housekeeping")
def housekeeping(apps: list[str] | None = None) -> list[Item]:
    """Keep a long-running platform's disks and registry from filling up.

    Nightly (deployment `housekeeping/housekeeping-nightly`). The `shipline-housekeeping/default` block, read
    at each run, says how long things are kept and whether this is a dry run:
    - delivery workspaces untouched past `workspace_retention_days` go, never one whose delivery run goes on;
    - release directories (rendered compose files) past `release_dir_retention_days` go, never the live or
      deploying release's;
    - of each app's images (`apps` limits the run to those apps), every live one, the `keep_images_per_app`
      newest that went live and as many newest pushed stay; the others are deleted from the registry by
      digest, and the registry's garbage-collect frees their space (the stack's own registry, read-only
      for that while).
    The `housekeeping` table lists everything looked at: removed or kept, why, and the bytes. A step that
    failed is named there and fails the run once the others are done.
    """
    policy = read_housekeeping_policy()
    workspaces = remove_old_workspaces(policy, return_state=True)
    release_dirs = remove_old_release_dirs(policy, return_state=True)
    planned = plan_image_deletions(policy, apps, return_state=True)
    to_delete = planned.result().apps_with_deletions() if planned.is_completed() else {}
    deletions = {app: delete_app_images(app, ds, policy, return_state=True) for app, ds in to_delete.items()}
    items = [
        *rows_of(workspaces, Kind.WORKSPACE, "workspaces"),
        *rows_of(release_dirs, Kind.RELEASE_DIR, "releases"),
        *rows_of(planned, Kind.IMAGE, "registry"),
        *(row for app, done in deletions.items() for row in rows_of(done, Kind.IMAGE, f"apps/{app}")),
    ]
    blobs = reclaim_blob_space(policy, removed_images(items), return_state=True)
    items += rows_of(blobs, Kind.BLOB_SPACE, "registry")

    create_table_artifact(
        key="housekeeping",
        table=table(items),
        description=f"Housekeeping{' (dry run)' if policy.dry_run else ''}: "
        f"{summary(items, dry_run=policy.dry_run)}. Bytes: freed by what was removed (for images, what the "
        "registry's garbage-collect frees), held by what was kept.",
    )
    if failures(items):
        raise StageError(
            f"housekeeping: {len(failures(items))} step(s) or removal(s) failed; the others are done "
            "(see the housekeeping table)"
        )
    return items
