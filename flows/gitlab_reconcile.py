"""Flow: deliver the branch heads whose GitLab push event was lost (the receiver was down)."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_table_artifact

from shipline.errors import StageError
from shipline.gitlab.reconcile import HeadCheck
from tasks.reconcile import gitlab_apps, reconcile_head


@flow(name="gitlab-reconcile")
def gitlab_reconcile() -> list[HeadCheck]:
    """For each app onboarded from GitLab, deliver its branch head unless a run delivers that commit.

    Scheduled every 5 minutes: GitLab does not queue a webhook it could not deliver, and a push of more
    than three branches fires none. One app's failure (GitLab refusing, a missing branch) fails that app's
    task run; the others are still reconciled. The table artifact lists what was found and done.
    """
    apps = gitlab_apps()
    states = [reconcile_head(app, return_state=True) for app in apps]
    checks: list[HeadCheck] = [s.result() for s in states if s.is_completed()]
    create_table_artifact(
        key="gitlab-reconcile",
        table=[c.model_dump() for c in checks] or [{"app": "(none)", "outcome": "nothing to reconcile"}],
        description="Branch heads of the apps onboarded from GitLab, and the delivery of each",
    )
    if len(checks) < len(apps):
        raise StageError(f"{len(apps) - len(checks)} of {len(apps)} app(s) could not be reconciled")
    return checks
