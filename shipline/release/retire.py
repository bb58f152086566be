"""``shipline retire APP --env ENV``: take an app out of an environment, leaving nothing of it running.

In this order, so that no request meets a stopping instance: its instance keys leave etcd (nginx stops
sending it traffic), a retirement key tells the discover daemon to remove its nginx file, its containers
stop gracefully and go, its port reservations and its deploy concurrency limit are removed. The release
history stays, with a ``retired`` entry at its end; the release that was live becomes ``superseded``, so
``shipline rollback`` can bring the app back. A later release clears the retirement.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import aetcd
import docker
from pydantic import BaseModel

from shipline.discovery.instances import deregister, list_instances, retired_key, withdraw_clearances
from shipline.discovery.splits import delete_split
from shipline.errors import ReleaseError
from shipline.etcd_client import connect
from shipline.release.deploy import running_instances, stop_instances
from shipline.release.history import Release, ReleaseStatus, _key, list_releases, set_status
from shipline.release.ports import RESERVATIONS, PortReservation, release_ports


class Retirement(BaseModel):
    """What ``retire`` removed."""

    app: str
    env: str
    keys: list[str]
    instances: list[str]
    ports: list[int]
    limit_removed: bool = False
    entry: int
    """Number of the ``retired`` entry in the release history."""


def retire(
    app: str, env: str, *, etcd_url: str, client: docker.DockerClient, grace_seconds: int
) -> Retirement:
    """Take ``app`` out of ``env`` (see the module's docstring).

    Raises:
        ReleaseError: if the app was never released to ``env`` and runs nothing there (a typo, most likely).
    """

    async def run() -> Retirement:
        async with connect(etcd_url) as etcd:
            history = await list_releases(etcd, app, env)
            running = running_instances(client, app=app, env=env)
            if not history and not running:
                raise ReleaseError(
                    f"{app} has no release in {env} and runs nothing there",
                    hint=f"check the name: shipline apps list, shipline releases {app} --env {env}",
                )
            # Clearances first: a registrator that resyncs meanwhile must not register them again.
            await withdraw_clearances(etcd, app, env)
            await delete_split(etcd, app, env)  # a canary's share, if one ran: the routes go anyway
            registered = await list_instances(etcd, app=app, env=env)
            for instance in registered:
                await deregister(etcd, instance)
            await etcd.put(retired_key(app, env).encode(), datetime.now(UTC).isoformat().encode())
            stop_instances(client, running, grace_seconds=grace_seconds)
            ports = []
            for kv in await etcd.get_prefix(f"{RESERVATIONS}/".encode()):
                held = PortReservation.model_validate_json(kv.value)
                if (held.app, held.env) == (app, env):
                    await release_ports(etcd, host=held.host, ports=[held.port])
                    ports.append(held.port)
            entry = await _record_retirement(etcd, history)
            return Retirement(
                app=app,
                env=env,
                keys=[instance.key for instance in registered],
                instances=[i.name for i in running],
                ports=sorted(ports),
                entry=entry,
            )

    return asyncio.run(run())


async def _record_retirement(etcd: aetcd.Client, history: list[Release]) -> int:
    for release in history:
        if release.status in {ReleaseStatus.LIVE, ReleaseStatus.DEPLOYING}:
            status = (
                ReleaseStatus.SUPERSEDED if release.status is ReleaseStatus.LIVE else ReleaseStatus.FAILED
            )
            await set_status(etcd, release, status)
    if not history:
        return 0
    last = history[-1]
    entry = last.model_copy(
        update={
            "number": last.number + 1,
            "status": ReleaseStatus.RETIRED,
            "flow_run_id": None,
            "request": {},
            "created": datetime.now(UTC),
            "finished": datetime.now(UTC),
        }
    )
    await etcd.put(_key(last.app, last.env, entry.number), entry.model_dump_json().encode())
    return entry.number
