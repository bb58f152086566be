"""Task: hand an image digest to an environment's release flow and wait for its verdict."""

from __future__ import annotations

from prefect import get_run_logger, task

from shipline.gitlab.statuses import STAGE_HOOKS
from shipline.release.history import Release
from shipline.release.lifecycle import run_release
from shipline.release.plan import ReleaseRequest


@task(task_run_name="release-to-{request.env}", **STAGE_HOOKS)
def release_to(request: ReleaseRequest, timeout_seconds: float = 3600) -> Release:
    """Run release/{env} for the request's digest and wait; fail unless that run completed.

    The idempotency key is app, environment and digest: a delivery retried from the UI finds the release
    run it started before instead of deploying the same digest twice.
    """
    release = run_release(
        request,
        timeout=timeout_seconds,
        idempotency_key=f"release-{request.app}-{request.env}-{request.digest}",
    )
    get_run_logger().info("%s release %s live in %s", request.app, release.number, request.env)
    return release
