"""Tasks: start a release's instances, wait for their health and registration, retire or remove instances."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from blocks.environment import ShiplineEnvironment
from blocks.registry import ShiplineRegistry
from shipline.config import load_settings
from shipline.discovery.instances import wait_until_registered
from shipline.docker import docker_client
from shipline.errors import DeployError
from shipline.release.compose import ComposeFile, compose_path
from shipline.release.deploy import (
    compose_up,
    limits_reached,
    remove_releases,
    running_instances,
    stop_instances,
    wait_healthy,
)
from shipline.release.secrets import read_secrets
from shipline.retries import retry_if_transient


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5, retry_condition_fn=retry_if_transient)
def start_instances(compose: ComposeFile, environment: ShiplineEnvironment) -> list[int]:
    """docker compose up the release's services beside the running ones; return their ports.

    The values of secret variables are read from their Prefect Secret blocks here, and go only into the
    environment of ``docker compose up``: never into a file, a log line or this task's result. The
    registry's login reaches the engine's pull through a private Docker configuration (``DOCKER_CONFIG``).
    """
    settings = load_settings()
    path = compose_path(settings.releases_dir, compose)
    secret_values = read_secrets(compose.secrets, where=f"{compose.app}/{compose.env}")
    compose_up(
        path,
        project=compose.project,
        services=compose.service_names,
        docker_host=environment.docker_host,
        variables=compose.passed_environment(secret_values),
        docker_config=ShiplineRegistry.current().registry().docker_config(settings.docker_config_dir),
    )
    get_run_logger().info("started %s on %s", ", ".join(compose.service_names), environment.docker_host)
    return compose.ports


@task(cache_policy=NO_CACHE)
def wait_for_health(compose: ComposeFile, environment: ShiplineEnvironment) -> None:
    """Wait until every new instance answers its health path (``service.health_timeout_seconds``).

    One that does not and ran into a limit — its pids limit, or its memory — is named with the setting to
    raise.
    """
    try:
        wait_healthy(
            host=environment.advertise_ip,
            ports=compose.ports,
            health_path=compose.service.health_path,
            timeout=compose.service.health_timeout_seconds,
        )
    except DeployError as failure:
        reached = limits_reached(
            docker_client(environment.docker_host),
            app=compose.app,
            env=compose.env,
            release=compose.release,
            pids_where=f"instance_pids_limit of the shipline-environment block {compose.env!r}",
            memory_where="service.memory of the app's shipline.yaml",
        )
        if reached:
            raise DeployError(f"{failure.message}; {'; '.join(reached)}", hint=failure.hint) from failure
        raise
    get_run_logger().info("healthy: %s", ", ".join(f"{environment.advertise_ip}:{p}" for p in compose.ports))


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=retry_if_transient)
def retire_instances(
    app: str, env: str, *, keep_release: int, environment: ShiplineEnvironment, grace_seconds: int
) -> list[str]:
    """Stop, gracefully, every instance of the app in the environment that is not of ``keep_release``."""
    client = docker_client(environment.docker_host)
    old = [i for i in running_instances(client, app=app, env=env) if i.release != keep_release]
    stop_instances(client, old, grace_seconds=grace_seconds)
    get_run_logger().info("retired %s", ", ".join(i.name for i in old) or "nothing")
    return [i.name for i in old]


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=retry_if_transient)
def remove_release_instances(app: str, env: str, release: int, environment: ShiplineEnvironment) -> list[str]:
    """Remove the instances of one release (a failed one), leaving the others serving."""
    client = docker_client(environment.docker_host)
    doomed = remove_releases(client, app=app, env=env, releases={release})
    get_run_logger().warning(
        "removed the instances of failed release %s: %s", release, ", ".join(i.name for i in doomed) or "none"
    )
    return [i.name for i in doomed]


@task(cache_policy=NO_CACHE)
def wait_for_registration(
    compose: ComposeFile, environment: ShiplineEnvironment, timeout_seconds: float = 30
) -> None:
    """Wait until the registrator has put every new instance in etcd, so nginx routes to them.

    The old instances are retired only after this: a release nobody can reach is not made live.

    Raises:
        DeployError: if no registrator registered them in time.
    """
    wanted = {f"{environment.advertise_ip}:{port}" for port in compose.ports}
    if not wait_until_registered(
        load_settings().etcd_url, app=compose.app, env=compose.env, addresses=wanted, timeout=timeout_seconds
    ):
        raise DeployError(
            f"{compose.app}/{compose.env}: no registrator registered {', '.join(sorted(wanted))} "
            f"within {timeout_seconds:.0f}s",
            hint=f"is `shipline registrator` running on {environment.docker_host}? (shipline status)",
        )
    get_run_logger().info("registered in etcd: %s", ", ".join(sorted(wanted)))
