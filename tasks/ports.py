"""Task: reserve a port for each new instance on the environment's host."""

from __future__ import annotations

import asyncio
import ipaddress

from prefect import get_run_logger, task

from blocks.environment import ShiplineEnvironment
from shipline.config import load_settings
from shipline.deploy import docker_client
from shipline.etcd_client import connect
from shipline.port_allocation import reserve_ports
from shipline.retries import retry_if_transient
from shipline.stack.ports import listening_ports

RESERVATION_SECONDS = 900
"""Covers a deploy; afterwards the containers' shipline.port labels keep the ports taken."""


@task(retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=retry_if_transient)
def allocate_instance_ports(app: str, env: str, count: int, environment: ShiplineEnvironment) -> list[int]:
    """Reserve ``count`` free ports of the environment's range, skipping every port taken on its host."""
    client = docker_client(environment.docker_host)
    in_use = {
        int(c.labels["shipline.port"])
        for c in client.containers.list(all=True, filters={"label": "shipline.port"})
    }
    if ipaddress.ip_address(environment.advertise_ip).is_loopback:
        in_use |= listening_ports()  # the host is this machine: its sockets are visible here

    async def reserve() -> list[int]:
        async with connect(load_settings().etcd_url) as etcd:
            lease = await etcd.lease(ttl=RESERVATION_SECONDS)
            return await reserve_ports(
                etcd,
                host=environment.advertise_ip,
                first=environment.port_range_start,
                last=environment.port_range_end,
                count=count,
                app=app,
                env=env,
                lease=lease,
                in_use=in_use,
            )

    ports = asyncio.run(reserve())
    get_run_logger().info("reserved ports %s on %s for %s/%s", ports, environment.advertise_ip, app, env)
    return ports
