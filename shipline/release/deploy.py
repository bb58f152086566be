"""Deploy primitives on an environment's Docker host: compose up, health, running instances, graceful stop.

The release flow composes these into a rolling update — start the new instances beside the old ones,
wait until they answer their health path, then stop the old ones — so that each step is a task run.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

import docker
from docker.errors import APIError, NotFound
from pydantic import BaseModel

from shipline.docker import compose_binary, docker_client
from shipline.errors import DeployError
from shipline.health import poll_health
from shipline.spec import MASK


class RunningInstance(BaseModel):
    """A container of an app in an environment, as its labels describe it."""

    container_id: str
    name: str
    app: str
    env: str
    port: int
    release: int
    status: str


def compose_up(
    compose_file: Path,
    *,
    project: str,
    services: list[str],
    docker_host: str,
    variables: Mapping[str, str] | None = None,
    docker_config: Path | None = None,
    timeout: float = 300,
) -> None:
    """Create or update the services of ``compose_file``; containers of other services are left running.

    Compose's exit status is not enough: ``up --detach`` exits 0 even when the engine refuses to create a
    container. So every service in ``services`` must have a running container afterwards.

    Args:
        variables: Given to Compose in its environment only, for the file's ``${…}`` (the secret values
            of ``ComposeFile.passed_environment``): never written, never part of a message.
        docker_config: A Docker client configuration directory holding the registry's login
            (``Registry.docker_config``), for the engine's pull of the image.

    Raises:
        DeployError: with the engine's own message if it rejects the file or a container.
    """
    command = [compose_binary(), "-p", project, "-f", str(compose_file), "up", "--detach", "--quiet-pull"]
    env = {**os.environ, **(variables or {}), "DOCKER_HOST": docker_host}
    if docker_config is not None:
        env["DOCKER_CONFIG"] = str(docker_config)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DeployError(
            f"{project}: docker compose up took longer than {timeout:.0f}s", transient=True
        ) from exc
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    missing = _services_not_running(docker_client(docker_host), project, services)
    if done.returncode != 0 or missing:
        reason = (errors or lines or ["no output"])[-1]
        for value in (variables or {}).values():
            reason = reason.replace(value, MASK) if value else reason  # whatever Compose quotes back
        not_running = f" ({', '.join(missing)} not running)" if missing else ""
        raise DeployError(
            f"{project}: docker compose up failed{not_running}: {reason}",
            hint=f"the compose file is kept at {compose_file}",
        )


def _services_not_running(client: docker.DockerClient, project: str, services: list[str]) -> list[str]:
    filters = {"label": [f"com.docker.compose.project={project}"], "status": "running"}
    running = {c.labels.get("com.docker.compose.service") for c in client.containers.list(filters=filters)}
    return [service for service in services if service not in running]


def wait_healthy(*, host: str, ports: list[int], health_path: str, timeout: float) -> None:
    """Wait until every ``http://host:port{health_path}`` answers below 400.

    Raises:
        DeployError: naming each instance that did not answer in time and its last answer.
    """
    urls = {f"http://{host}:{port}{health_path}": port for port in ports}
    pending = asyncio.run(poll_health(list(urls), timeout=timeout))
    if pending:
        failing = ", ".join(f"{host}:{urls[url]} ({answer})" for url, answer in sorted(pending.items()))
        raise DeployError(
            f"not healthy within {timeout:.0f}s at {health_path}: {failing}",
            hint="read the containers' logs (docker logs NAME)",
        )


def running_instances(client: docker.DockerClient, *, app: str, env: str) -> list[RunningInstance]:
    """The containers labelled as instances of ``app`` in ``env``, running or not."""
    filters = {"label": [f"shipline.app={app}", f"shipline.env={env}"]}
    instances = []
    for container in client.containers.list(all=True, filters=filters):
        labels = container.labels
        instances.append(
            RunningInstance(
                container_id=container.id or "",
                name=container.name or "",
                app=app,
                env=env,
                port=int(labels.get("shipline.port", "0")),
                release=int(labels.get("shipline.release", "0")),
                status=container.status,
            )
        )
    return sorted(instances, key=lambda i: (i.release, i.port))


def limits_reached(
    client: docker.DockerClient, *, app: str, env: str, release: int, pids_where: str, memory_where: str
) -> list[str]:
    """Which instances of ``release`` ran into a limit: the kernel killed one for its memory, or one holds
    as many processes and threads as its pids limit lets it (its next fork fails). Each names the setting
    to raise (``pids_where``, ``memory_where``); empty when none did, or the engine cannot tell.
    """
    filters = {"label": [f"shipline.app={app}", f"shipline.env={env}", f"shipline.release={release}"]}
    reached = []
    try:
        for container in client.containers.list(all=True, filters=filters):
            host = container.attrs.get("HostConfig", {})
            if container.attrs.get("State", {}).get("OOMKilled"):
                memory = host.get("Memory") or 0
                at = (
                    f"at {memory // 2**20} MiB" if memory else "with no limit of its own (the host's ran out)"
                )
                reached.append(f"{container.name} was killed for memory {at} ({memory_where})")
            limit = host.get("PidsLimit") or 0
            if container.status == "running" and limit > 0:
                pids = container.stats(stream=False, one_shot=True).get("pids_stats", {})
                if pids.get("current", 0) >= limit:
                    reached.append(
                        f"{container.name} is at its pids limit, {limit} processes and threads ({pids_where})"
                    )
    except (APIError, NotFound):
        return reached  # an instance that went meanwhile: what was found still holds
    return reached


def remove_releases(
    client: docker.DockerClient, *, app: str, env: str, releases: set[int], grace_seconds: int = 2
) -> list[RunningInstance]:
    """Stop and remove the instances of ``releases`` (failed or abandoned ones); return them.

    Raises:
        DeployError: if the engine refuses to stop or remove a container.
    """
    doomed = [i for i in running_instances(client, app=app, env=env) if i.release in releases]
    stop_instances(client, doomed, grace_seconds=grace_seconds)
    return doomed


def stop_instances(
    client: docker.DockerClient, instances: list[RunningInstance], *, grace_seconds: int
) -> None:
    """Stop each instance gracefully (SIGTERM, then SIGKILL after ``grace_seconds``) and remove it.

    Raises:
        DeployError: if the engine refuses to stop or remove a container.
    """
    for instance in instances:
        try:
            container = client.containers.get(instance.container_id)
            container.stop(timeout=grace_seconds)
            container.remove()
        except NotFound:
            continue  # already gone: the goal is reached
        except APIError as exc:
            raise DeployError(f"cannot stop {instance.name}: {exc.explanation}", transient=True) from exc
