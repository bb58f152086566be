"""Task: render the compose file of a release, keep it with the release and show it in the UI."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact

from shipline.compose import ComposeDeployment, build_deployment, render_compose
from shipline.config import load_settings
from shipline.release_plan import ReleaseRequest


def release_dir(app: str, env: str, number: int) -> Path:
    """Where a release's files are kept on the environment's host."""
    return load_settings().home / "releases" / app / env / str(number)


@task
def render_compose_file(request: ReleaseRequest, release_number: int, ports: list[int]) -> ComposeDeployment:
    """Validate the values, render the release's docker-compose.yml, and attach it as an artifact."""
    service = request.service
    deployment = build_deployment(
        app=request.app,
        env=request.env,
        release=release_number,
        image=request.image,
        digest=request.digest,
        instances=[{"port": port} for port in ports],
        port_variable=service.port_variable,
        health_path=service.health_path,
        environment=service.environment,
        command=service.command,
        mounts=[mount.model_dump() for mount in service.mounts],
        cpus=service.cpus,
        memory=service.memory,
        stop_grace_seconds=service.stop_grace_seconds,
    )
    text = render_compose(deployment)
    directory = release_dir(request.app, request.env, release_number)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / ".docker-compose.yml.tmp"
    tmp.write_text(text)
    tmp.replace(directory / "docker-compose.yml")
    create_markdown_artifact(
        key=f"compose-{request.app}-{request.env}",
        markdown=f"### docker-compose.yml of {request.app} in {request.env}, release {release_number}\n\n"
        f"```yaml\n{text}```\n",
        description=f"Compose file of release {release_number}",
    )
    return deployment
