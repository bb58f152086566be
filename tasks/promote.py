"""Task: hand an image digest to an environment's release flow and wait for its verdict."""

from __future__ import annotations

from prefect import get_run_logger, task

from shipline.deployment_runs import run_deployment_and_wait
from shipline.errors import DeployError
from shipline.release_plan import ReleaseRequest
from shipline.releases import Release


@task(task_run_name="release-to-{request.env}")
def release_to(request: ReleaseRequest, timeout_seconds: float = 3600) -> Release:
    """Run release/{env} for the request's digest and wait; fail unless that run completed.

    The idempotency key is app, environment and digest: a delivery retried from the UI finds the release
    run it started before instead of deploying the same digest twice.
    """
    flow_run = run_deployment_and_wait(
        f"release/{request.env}",
        parameters={"request": request.model_dump(mode="json")},
        timeout=timeout_seconds,
        idempotency_key=f"release-{request.app}-{request.env}-{request.digest}",
    )
    state = flow_run.state
    if state is None or not state.is_completed():
        raise DeployError(
            f"{request.app} to {request.env}: release run {flow_run.name} ended "
            f"{state.name if state else 'without a state'}: {state.message if state else ''}",
            hint=f"open flow run {flow_run.id} in the Prefect UI",
        )
    release = state.result()
    get_run_logger().info("%s release %s live in %s", request.app, release.number, request.env)
    return release
