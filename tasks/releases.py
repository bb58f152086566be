"""Tasks: the release record (open, close, abandoned ones) and the one-deploy-at-a-time limit."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from blocks.environment import ShiplineEnvironment
from shipline.capabilities import capability_problems
from shipline.config import load_settings
from shipline.errors import ReleaseError
from shipline.mounts import mount_problems
from shipline.release import lifecycle, road
from shipline.release.history import Release, ReleaseStatus
from shipline.release.plan import ReleaseRequest
from shipline.release.secrets import read_secrets
from shipline.retries import retry_if_transient


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=retry_if_transient)
def ensure_deploy_limit(app: str, env: str) -> str:
    """Create the strict global concurrency limit ``deploy-{app}-{env}`` (limit 1) if it does not exist."""
    name, created = lifecycle.ensure_deploy_limit(app, env)
    if created:
        get_run_logger().info("created concurrency limit %s", name)
    return name


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=retry_if_transient)
def fail_abandoned_releases(app: str, env: str, environment: ShiplineEnvironment) -> list[int]:
    """Fail every release still ``deploying``: with the deploy lock held, the process deploying it is gone.

    A worker killed mid-deploy leaves its release ``deploying``, its new instances, never verified,
    possibly running, and its port reservations. The instances are removed, the ports given back and the
    release is recorded as failed; whatever was live keeps serving. The instances a failed release left
    on an engine that was gone when it failed are removed too.
    Returns the numbers of the releases failed.
    """
    abandoned = lifecycle.fail_abandoned_releases(
        app,
        env,
        etcd_url=load_settings().etcd_url,
        docker_host=environment.docker_host,
        host=environment.advertise_ip,
    )
    releases, doomed = abandoned.releases, abandoned.removed
    if releases:
        get_run_logger().warning(
            "release(s) %s of %s in %s were left deploying by a deploy that died (flow run(s) %s): "
            "removed %s, gave back port(s) %s and recorded them as failed",
            ", ".join(str(r.number) for r in releases),
            app,
            env,
            ", ".join(r.flow_run_id or "?" for r in releases),
            ", ".join(i.name for i in doomed) or "no instance",
            ", ".join(str(p) for p in abandoned.ports) or "none",
        )
    elif doomed:
        get_run_logger().warning(
            "removed %s of failed release(s) of %s in %s: its deploy could not (its engine was gone)",
            ", ".join(i.name for i in doomed),
            app,
            env,
        )
    return sorted(r.number for r in releases)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=retry_if_transient)
def check_road(request: ReleaseRequest, environment: ShiplineEnvironment) -> list[int]:
    """Refuse the digest unless it went live first where the environment's block requires (PROD: PRE)."""
    required = road.required_before(request.env, environment.requires_passed)
    etcd_url = load_settings().etcd_url
    passed = road.check_road(
        app=request.app,
        env=request.env,
        digest=request.digest,
        required=required,
        history=lambda env: lifecycle.release_history(request.app, env, etcd_url=etcd_url),
    )
    for before, number in zip(required, passed, strict=True):
        get_run_logger().info("%s passed %s as release %s", request.digest, before, number)
    return passed


@task(cache_policy=NO_CACHE)
def check_host_mounts(request: ReleaseRequest, environment: ShiplineEnvironment) -> None:
    """Refuse a release whose instances mount a host path the environment's block does not allow (a release
    run started by hand skips the delivery's spec stage, which checks the same)."""
    problems = mount_problems(
        request.service.mounts,
        environment.host_mounts,
        env=request.env,
        field="service.mounts",
        home=load_settings().home,
    )
    if problems:
        raise ReleaseError("; ".join(problems))


@task(cache_policy=NO_CACHE)
def check_capabilities(request: ReleaseRequest, environment: ShiplineEnvironment) -> None:
    """Refuse a release whose instances ask for a Linux capability the environment's block does not allow (a
    release run started by hand skips the delivery's spec stage, which checks the same)."""
    problems = capability_problems(
        request.service.capabilities,
        environment.allowed_capabilities,
        env=request.env,
        field="service.capabilities",
    )
    if problems:
        raise ReleaseError("; ".join(problems))


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=retry_if_transient)
def check_secrets(request: ReleaseRequest) -> list[str]:
    """Refuse a release whose variables name a Prefect Secret block that is missing or holds no text,
    before approval and before anything is deployed; return the variables read from blocks (names only).
    The deploy reads the values again when it starts the instances: they are never kept."""
    secrets = request.settings.secrets
    read_secrets(secrets, where=f"{request.app}/{request.env}")
    if secrets:
        get_run_logger().info(
            "secret variables: %s", ", ".join(f"{v} (Secret block {b})" for v, b in sorted(secrets.items()))
        )
    return sorted(secrets)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=retry_if_transient)
def open_release(request: ReleaseRequest, approval: str | None = None) -> Release:
    """Record the release in etcd as ``deploying`` under the next number, with who approved it."""
    release = lifecycle.open_release(
        request,
        etcd_url=load_settings().etcd_url,
        flow_run_id=str(flow_run.get_id() or ""),
        approval=approval,
    )
    get_run_logger().info(
        "release %s of %s in %s: %s", release.number, release.app, release.env, release.digest
    )
    return release


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=retry_if_transient)
def close_release(release: Release, status: ReleaseStatus) -> Release:
    """Give the release its final status; a new live release supersedes the one live before it."""
    closed = lifecycle.close_release(release, status, etcd_url=load_settings().etcd_url)
    create_table_artifact(
        key=f"release-{release.app}-{release.env}",
        table=[
            {
                "release": closed.number,
                "status": str(closed.status),
                "digest": closed.digest,
                "sha": closed.sha,
                "flow_run": closed.flow_run_id or "",
            }
        ],
        description=f"Release {closed.number} of {closed.app} in {closed.env}: {closed.status}",
    )
    return closed
