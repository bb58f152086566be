"""Task: hand an image digest to an environment's release flow and wait for its verdict."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.runtime import flow_run

from shipline.gitlab.statuses import STAGE_HOOKS
from shipline.release.history import Release
from shipline.release.lifecycle import run_release
from shipline.release.plan import ReleaseRequest


@task(task_run_name="release-to-{request.env}", **STAGE_HOOKS)
def release_to(request: ReleaseRequest, timeout_seconds: float = 3600) -> Release:
    """Run release/release-to-{env} for the request's digest and wait; fail unless that run completed.

    The idempotency key is app, environment, digest and this delivery attempt (its flow run and run count):
    a retry of this task within one attempt finds the release run it started; a delivery retried from the
    UI is a new attempt, so a failed release runs again as a new release. A release that went live is not
    run again: this task's completed result is reused (cached) by the retried delivery.
    """
    release = run_release(request, timeout=timeout_seconds, idempotency_key=release_key(request))
    get_run_logger().info("%s release %s live in %s", request.app, release.number, request.env)
    return release


def release_key(request: ReleaseRequest) -> str:
    """The release run's idempotency key for this attempt of the delivery that asks for it."""
    key = f"release-{request.app}-{request.env}-{request.digest}"
    run_id = flow_run.get_id()
    if run_id is None:  # called outside a flow run (a script): the digest alone
        return key
    return f"{key}-{run_id}-{flow_run.get_run_count()}"
