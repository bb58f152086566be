"""Tasks: a verified release first takes a share of the traffic, and nginx's figures decide the rest."""

from __future__ import annotations

import asyncio

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from blocks.environment import ShiplineEnvironment
from shipline.config import load_settings
from shipline.discovery.instances import Instance, list_instances
from shipline.discovery.routes import RoutingTable, running_mode
from shipline.discovery.splits import TrafficSplit, delete_split, put_split
from shipline.errors import ConfigError
from shipline.etcd_client import connect
from shipline.release import canary
from shipline.release.history import Release
from shipline.retries import retry_if_transient
from shipline.spec import CanarySpec


@task(cache_policy=NO_CACHE)
def check_canary_routing(app: str, env: str) -> None:
    """A canary needs nginx's dynamic routing (weights and per-member counts): refuse it before deploying.

    Raises:
        ConfigError: nginx routes from templates here.
    """
    if running_mode(load_settings()) != "dynamic":
        raise ConfigError(
            f"{app}/{env}: the spec asks for a canary, but nginx routes from templates here: a canary needs "
            "dynamic routing (weights and nginx's counts per member)",
            hint="install libnginx-mod-http-lua and lua-resty-core and run shipline up with "
            "SHIPLINE_NGINX_MODE=auto or dynamic, or remove the canary from the spec",
        )


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=retry_if_transient)
def start_canary(
    release: Release, ports: list[int], environment: ShiplineEnvironment, spec: CanarySpec
) -> TrafficSplit | None:
    """Split the traffic before the release is cleared: its instances take ``weight`` % once registered.

    With no live instance to compare with (a first release, or none registered) there is nothing to split:
    None, and the release takes all the traffic as usual.
    """
    members = [
        Instance(app=release.app, env=release.env, ip=environment.advertise_ip, port=p).address for p in ports
    ]
    split = TrafficSplit(
        app=release.app, env=release.env, release=release.number, weight=spec.weight, members=members
    )

    async def put() -> TrafficSplit | None:
        async with connect(load_settings().etcd_url) as client:
            if not await list_instances(client, app=release.app, env=release.env):
                return None
            await put_split(client, split)
            return split

    started = asyncio.run(put())
    if started is None:
        get_run_logger().info(
            "no live instance of %s in %s to compare with: no canary, release %s takes all the traffic",
            release.app,
            release.env,
            release.number,
        )
    return started


@task(cache_policy=NO_CACHE)
def analyse_canary(split: TrafficSplit, spec: CanarySpec) -> canary.CanaryVerdict:
    """Measure the canary for its window through nginx's counts, judge it, and publish the analysis."""
    logger = get_run_logger()
    settings = load_settings()

    async def run() -> canary.CanaryVerdict:
        table = RoutingTable(settings.nginx_admin_socket)
        try:
            return await canary.analyse(split, spec, etcd_url=settings.etcd_url, table=table, log=logger.info)
        finally:
            await table.close()

    verdict = asyncio.run(run())
    create_table_artifact(
        key=f"canary-{split.app}-{split.env}",
        table=verdict.table(),
        description=f"Canary of release {split.release} of {split.app} in {split.env}: {verdict.summary()}",
    )
    logger.info("%s", verdict.summary())
    return verdict


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=retry_if_transient)
def end_canary(app: str, env: str) -> None:
    """Remove the traffic split: whatever instances are registered now share the traffic evenly."""

    async def delete() -> None:
        async with connect(load_settings().etcd_url) as client:
            await delete_split(client, app, env)

    asyncio.run(delete())
