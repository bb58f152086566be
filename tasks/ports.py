"""Task: reserve a port for each new instance on the environment's host."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.environment import ShiplineEnvironment
from shipline.config import load_settings
from shipline.release.ports import allocate_ports, free_ports
from shipline.retries import retry_if_transient


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=retry_if_transient)
def allocate_instance_ports(app: str, env: str, count: int, environment: ShiplineEnvironment) -> list[int]:
    """Reserve ``count`` free ports of the environment's range, skipping every port taken on its host."""
    ports = allocate_ports(
        app=app,
        env=env,
        count=count,
        docker_host=environment.docker_host,
        host=environment.advertise_ip,
        first=environment.port_range_start,
        last=environment.port_range_end,
        etcd_url=load_settings().etcd_url,
    )
    get_run_logger().info("reserved ports %s on %s for %s/%s", ports, environment.advertise_ip, app, env)
    return ports


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=retry_if_transient)
def free_instance_ports(app: str, env: str, ports: list[int], environment: ShiplineEnvironment) -> list[int]:
    """Give back the deploy's port reservations: a running instance's label keeps its port taken."""
    freed = free_ports(
        app=app, env=env, host=environment.advertise_ip, ports=ports, etcd_url=load_settings().etcd_url
    )
    get_run_logger().info("gave back reservations of ports %s on %s", freed, environment.advertise_ip)
    return freed
