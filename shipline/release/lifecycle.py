"""The release rules, as one small synchronous API for tasks, the CLI and the daemons.

- A release is opened ``deploying`` under the next number and closed ``live``, ``rolled-back`` or
  ``failed``; a new live release supersedes the one live before it.
- A release still ``deploying`` when the next deploy holds the app's deploy lock was abandoned by a deploy
  that died (a killed worker): its instances are removed and it is recorded as failed.
- A rollback replays the request of an earlier good release (same digest) as a new release.
- A release is run as the environment's ``release/release-to-{env}`` deployment; its flow run must complete.

The records live in etcd (``shipline.release.history``); these functions open one connection per call.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.exceptions import ObjectNotFound

from shipline.discovery.instances import clear_release, retired_key, withdraw_clearances
from shipline.docker import docker_client
from shipline.errors import DeployError, ReleaseError
from shipline.etcd_client import connect
from shipline.flow_runs import run_deployment_and_wait
from shipline.release.deploy import RunningInstance, remove_releases
from shipline.release.history import (
    Release,
    ReleaseStatus,
    every_release,
    last_good,
    list_releases,
    record_release,
    set_status,
)
from shipline.release.plan import ReleaseRequest
from shipline.release.ports import release_held_ports, reserved_ports


def release_history(app: str, env: str, *, etcd_url: str) -> list[Release]:
    """Every release of ``app`` in ``env``, oldest first."""

    async def read() -> list[Release]:
        async with connect(etcd_url) as client:
            return await list_releases(client, app, env)

    return asyncio.run(read())


def all_releases(*, etcd_url: str, app: str | None = None) -> list[Release]:
    """Every release of every app (or of ``app``) in every environment, read at once.

    Raises:
        ServiceUnavailableError: if etcd does not answer.
    """

    async def read() -> list[Release]:
        async with connect(etcd_url) as client:
            return await every_release(client, app)

    return asyncio.run(read())


def open_release(
    request: ReleaseRequest, *, etcd_url: str, flow_run_id: str | None, approval: str | None = None
) -> Release:
    """Record the request's release as ``deploying`` under the next number."""

    async def record() -> Release:
        async with connect(etcd_url) as client:
            await client.delete(retired_key(request.app, request.env).encode())  # back in the environment
            return await record_release(
                client,
                app=request.app,
                env=request.env,
                image=request.image,
                digest=request.digest,
                sha=request.sha,
                committed=request.committed,
                flow_run_id=flow_run_id,
                request=request.model_dump(mode="json"),
                approval=approval,
            )

    return asyncio.run(record())


def close_release(release: Release, status: ReleaseStatus, *, etcd_url: str) -> Release:
    """Give ``release`` its final status; a release that goes live supersedes the one live before it."""

    async def close() -> Release:
        async with connect(etcd_url) as client:
            if status is ReleaseStatus.LIVE:
                for older in await list_releases(client, release.app, release.env):
                    if older.number != release.number and older.status is ReleaseStatus.LIVE:
                        await set_status(client, older, ReleaseStatus.SUPERSEDED)
            return await set_status(client, release, status)

    return asyncio.run(close())


@dataclass(frozen=True)
class Abandoned:
    """What ``fail_abandoned_releases`` found and undid."""

    releases: list[Release]
    removed: list[RunningInstance]
    ports: list[int]


def fail_abandoned_releases(app: str, env: str, *, etcd_url: str, docker_host: str, host: str) -> Abandoned:
    """Fail every release of ``app`` in ``env`` still ``deploying``, remove its instances and give back its
    port reservations on ``host``; remove too the instances of failed releases whose deploy could not
    (their host's engine was gone).

    Call it only while holding the app's deploy lock: then no live deploy owns such a release, nor any
    reservation of ``app`` in ``env`` (a dead deploy's would otherwise hold its ports for the lease's 900 s).
    """

    async def fail_abandoned() -> Abandoned:
        async with connect(etcd_url) as client:
            history = await list_releases(client, app, env)
            releases = [r for r in history if r.status is ReleaseStatus.DEPLOYING]
            failed = {r.number for r in history if r.status is ReleaseStatus.FAILED}
            if not releases and not failed:
                return Abandoned([], [], [])
            doomed = await asyncio.to_thread(
                remove_releases,
                docker_client(docker_host),
                app=app,
                env=env,
                releases={r.number for r in releases} | failed,
            )
            ports: list[int] = []
            if releases:
                held = await reserved_ports(client, host)
                ports = await release_held_ports(client, host=host, ports=sorted(held), app=app, env=env)
            for release in releases:
                await set_status(client, release, ReleaseStatus.FAILED)
            await withdraw_clearances(client, app, env, only={r.number for r in releases})
            return Abandoned(releases, doomed, ports)

    return asyncio.run(fail_abandoned())


def clear_for_traffic(release: Release, *, etcd_url: str) -> None:
    """Let the release's instances take traffic: registrators put them in etcd, and so behind nginx."""

    async def clear() -> None:
        async with connect(etcd_url) as client:
            await clear_release(client, release.app, release.env, release.number, release.digest)

    asyncio.run(clear())


def withdraw_traffic(
    app: str, env: str, *, etcd_url: str, only: set[int] | None = None, keep: int | None = None
) -> int:
    """Withdraw release clearances (``only`` those releases; never ``keep``); return how many went."""

    async def withdraw() -> int:
        async with connect(etcd_url) as client:
            return await withdraw_clearances(client, app, env, only=only, keep=keep)

    return asyncio.run(withdraw())


def rollback_target(history: list[Release], *, to: int | None) -> Release:
    """The release to go back to: ``to``, or the last good one before the current live release.

    Raises:
        ReleaseError: if there is no such release, or it recorded no request to replay.
    """
    if not history:
        raise ReleaseError("there is no release to roll back to")
    app, env = history[0].app, history[0].env
    if to is not None:
        target = next((r for r in history if r.number == to), None)
        if target is None:
            raise ReleaseError(
                f"{app}/{env} has no release {to}", hint=f"shipline releases {app} --env {env}"
            )
    else:
        live = [r for r in history if r.status is ReleaseStatus.LIVE]
        before = live[-1].number if live else history[-1].number + 1
        found = last_good(history, before=before)
        if found is None:
            raise ReleaseError(f"{app}/{env} has no good release before release {before}")
        target = found
    if not target.request:
        raise ReleaseError(f"release {target.number} of {app}/{env} recorded no request to replay")
    return target


def replay_request(target: Release) -> ReleaseRequest:
    """The request of ``target``, ready to be deployed again."""
    return ReleaseRequest.model_validate(target.request)


def release_as_shown(release: Release) -> dict[str, Any]:
    """``release`` as people read it (``shipline releases --json``): its request with the plain values of
    secret-looking variables masked. The record itself keeps them: a rollback replays it."""
    shown = release.model_dump(mode="json")
    if release.request:
        shown["request"] = replay_request(release).masked().model_dump(mode="json")
    return shown


def deploy_limit_name(app: str, env: str) -> str:
    """The strict global concurrency limit that lets one deploy at a time touch ``app`` in ``env``."""
    return f"deploy-{app}-{env}"


def ensure_deploy_limit(app: str, env: str) -> tuple[str, bool]:
    """Create the app's deploy limit (limit 1) if missing; return its name and whether it is new."""
    name = deploy_limit_name(app, env)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            return name, True
    return name, False


def deploy_limit_exists(app: str, env: str) -> bool:
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(deploy_limit_name(app, env))
        except ObjectNotFound:
            return False
    return True


def remove_deploy_limit(app: str, env: str) -> bool:
    """Delete the app's deploy limit (a retired app needs none); False if there was none."""
    with get_client(sync_client=True) as client:
        try:
            client.delete_global_concurrency_limit_by_name(deploy_limit_name(app, env))
        except ObjectNotFound:
            return False
    return True


def release_deployment(env: str) -> str:
    """The release flow's deployment for ``env`` (flow/deployment), on the environment's pool."""
    return f"release/release-to-{env}"


def run_release(request: ReleaseRequest, *, timeout: float, idempotency_key: str | None = None) -> Release:
    """Run ``release/release-to-{env}`` for the request and wait for it; return the release it made live.

    Raises:
        DeployError: unless that flow run completed, naming its final state and message.
    """
    flow_run = run_deployment_and_wait(
        release_deployment(request.env),
        parameters={"request": request.model_dump(mode="json")},
        timeout=timeout,
        idempotency_key=idempotency_key,
    )
    state = flow_run.state
    if state is None or not state.is_completed():
        raise DeployError(
            f"{request.app} to {request.env}: release run {flow_run.name} ended "
            f"{state.name if state else 'without a state'}: {state.message if state else ''}",
            hint=f"open flow run {flow_run.id} in the Prefect UI",
        )
    release = state.result()
    if not isinstance(release, Release):
        release = Release.model_validate(release)
    return release
