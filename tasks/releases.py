"""Tasks: open and close a release record, and the one-deploy-at-a-time limit per app and environment."""

from __future__ import annotations

import asyncio

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run

from blocks.environment import ShiplineEnvironment
from shipline.config import load_settings
from shipline.deploy import RunningInstance, docker_client, remove_releases
from shipline.etcd_client import connect
from shipline.release_plan import ReleaseRequest
from shipline.releases import Release, ReleaseStatus, list_releases, record_release, set_status
from shipline.retries import retry_if_transient


def deploy_limit_name(app: str, env: str) -> str:
    return f"deploy-{app}-{env}"


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=retry_if_transient)
def ensure_deploy_limit(app: str, env: str) -> str:
    """Create the strict global concurrency limit ``deploy-{app}-{env}`` (limit 1) if it does not exist."""
    name = deploy_limit_name(app, env)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            get_run_logger().info("created concurrency limit %s", name)
    return name


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=retry_if_transient)
def fail_abandoned_releases(app: str, env: str, environment: ShiplineEnvironment) -> list[int]:
    """Fail every release still ``deploying``: with the deploy lock held, the process deploying it is gone.

    A worker killed mid-deploy leaves its release ``deploying`` and its new instances, never verified,
    possibly running. They are removed (each leaves etcd, and so nginx, before it stops) and the release is
    recorded as failed; whatever was live keeps serving. Returns the numbers of the releases failed.
    """

    async def fail_abandoned() -> tuple[list[Release], list[RunningInstance]]:
        async with connect(load_settings().etcd_url) as client:
            releases = [
                r for r in await list_releases(client, app, env) if r.status is ReleaseStatus.DEPLOYING
            ]
            if not releases:
                return [], []
            docker = docker_client(environment.docker_host)
            numbers = {r.number for r in releases}
            doomed = await asyncio.to_thread(remove_releases, docker, app=app, env=env, releases=numbers)
            for release in releases:
                await set_status(client, release, ReleaseStatus.FAILED)
            return releases, doomed

    releases, doomed = asyncio.run(fail_abandoned())
    if releases:
        get_run_logger().warning(
            "release(s) %s of %s in %s were left deploying by a deploy that died (flow run(s) %s): "
            "removed %s and recorded them as failed",
            ", ".join(str(r.number) for r in releases),
            app,
            env,
            ", ".join(r.flow_run_id or "?" for r in releases),
            ", ".join(i.name for i in doomed) or "no instance",
        )
    return sorted(r.number for r in releases)


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=retry_if_transient)
def open_release(request: ReleaseRequest) -> Release:
    """Record the release in etcd as ``deploying`` under the next number."""

    async def record() -> Release:
        async with connect(load_settings().etcd_url) as client:
            return await record_release(
                client,
                app=request.app,
                env=request.env,
                image=request.image,
                digest=request.digest,
                sha=request.sha,
                committed=request.committed,
                flow_run_id=str(flow_run.get_id() or ""),
                request=request.model_dump(mode="json"),
            )

    release = asyncio.run(record())
    get_run_logger().info(
        "release %s of %s in %s: %s", release.number, release.app, release.env, release.digest
    )
    return release


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=retry_if_transient)
def close_release(release: Release, status: ReleaseStatus) -> Release:
    """Give the release its final status; a new live release supersedes the one live before it."""

    async def close() -> Release:
        async with connect(load_settings().etcd_url) as client:
            if status is ReleaseStatus.LIVE:
                for older in await list_releases(client, release.app, release.env):
                    if older.number != release.number and older.status is ReleaseStatus.LIVE:
                        await set_status(client, older, ReleaseStatus.SUPERSEDED)
            return await set_status(client, release, status)

    closed = asyncio.run(close())
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
