"""Tasks: start a release's instances, wait for their health, retire or remove instances."""

from __future__ import annotations

import asyncio
import time

from prefect import get_run_logger, task

from blocks.environment import ShiplineEnvironment
from shipline.compose import ComposeDeployment
from shipline.config import load_settings
from shipline.deploy import (
    compose_up,
    docker_client,
    remove_releases,
    running_instances,
    stop_instances,
    wait_healthy,
)
from shipline.etcd_client import connect
from shipline.registry import list_instances
from shipline.retries import retry_if_transient
from tasks.compose import release_dir


@task(retries=1, retry_delay_seconds=5, retry_condition_fn=retry_if_transient)
def start_instances(deployment: ComposeDeployment, environment: ShiplineEnvironment) -> list[int]:
    """docker compose up the release's services beside the running ones; return their ports."""
    path = release_dir(deployment.app, deployment.env, deployment.release) / "docker-compose.yml"
    services = [deployment.service_name(i.port) for i in deployment.instances]
    compose_up(path, project=deployment.project, services=services, docker_host=environment.docker_host)
    get_run_logger().info("started %s on %s", ", ".join(services), environment.docker_host)
    return [i.port for i in deployment.instances]


@task
def wait_for_health(
    deployment: ComposeDeployment, environment: ShiplineEnvironment, timeout_seconds: float
) -> None:
    """Wait until every new instance answers its health path."""
    ports = [i.port for i in deployment.instances]
    wait_healthy(
        host=environment.advertise_ip,
        ports=ports,
        health_path=deployment.health_path,
        timeout=timeout_seconds,
    )
    get_run_logger().info("healthy: %s", ", ".join(f"{environment.advertise_ip}:{p}" for p in ports))


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=retry_if_transient)
def retire_instances(
    app: str, env: str, *, keep_release: int, environment: ShiplineEnvironment, grace_seconds: int
) -> list[str]:
    """Stop, gracefully, every instance of the app in the environment that is not of ``keep_release``."""
    client = docker_client(environment.docker_host)
    old = [i for i in running_instances(client, app=app, env=env) if i.release != keep_release]
    stop_instances(client, old, grace_seconds=grace_seconds)
    get_run_logger().info("retired %s", ", ".join(i.name for i in old) or "nothing")
    return [i.name for i in old]


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=retry_if_transient)
def remove_release_instances(app: str, env: str, release: int, environment: ShiplineEnvironment) -> list[str]:
    """Remove the instances of one release (a failed one), leaving the others serving."""
    client = docker_client(environment.docker_host)
    doomed = remove_releases(client, app=app, env=env, releases={release})
    get_run_logger().warning(
        "removed the instances of failed release %s: %s", release, ", ".join(i.name for i in doomed) or "none"
    )
    return [i.name for i in doomed]


@task
def wait_for_registration(
    deployment: ComposeDeployment, environment: ShiplineEnvironment, timeout_seconds: float = 30
) -> bool:
    """Wait until the registrator has put every new instance in etcd, so nginx routes to them.

    Returns False (with a warning) if no registrator registered them in time: the release goes on, but
    traffic through nginx does not reach it until one does.
    """
    wanted = {f"{environment.advertise_ip}:{i.port}" for i in deployment.instances}

    async def registered() -> bool:
        async with connect(load_settings().etcd_url) as client:
            found = {i.address for i in await list_instances(client, app=deployment.app, env=deployment.env)}
        return wanted <= found

    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if asyncio.run(registered()):
            get_run_logger().info("registered in etcd: %s", ", ".join(sorted(wanted)))
            return True
        time.sleep(0.2)
    get_run_logger().warning(
        "no registrator registered %s within %ss: is `shipline registrator` running on %s?",
        ", ".join(sorted(wanted)),
        timeout_seconds,
        environment.docker_host,
    )
    return False
