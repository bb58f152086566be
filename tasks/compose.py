"""Task: render the compose file of a release, keep it with the release and show it in the UI."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from blocks.environment import ShiplineEnvironment
from shipline.config import load_settings
from shipline.release.compose import ComposeFile, compose_file_for, write_compose_file
from shipline.release.plan import ReleaseRequest


@task(cache_policy=NO_CACHE)
def render_compose_file(
    request: ReleaseRequest, release_number: int, ports: list[int], environment: ShiplineEnvironment
) -> ComposeFile:
    """Render the release's docker-compose.yml under Shipline's home, with the pids limit and capabilities
    of the environment's block, and attach it as an artifact."""
    compose = compose_file_for(
        request,
        release_number,
        ports,
        pids_limit=environment.instance_pids_limit,
        allowed_capabilities=environment.allowed_capabilities,
        address=environment.advertise_ip,
    )
    _, text = write_compose_file(load_settings().releases_dir, compose)
    create_markdown_artifact(
        key=f"compose-{request.app}-{request.env}",
        markdown=f"### docker-compose.yml of {request.app} in {request.env}, release {release_number}\n\n"
        f"```yaml\n{text}```\n",
        description=f"Compose file of release {release_number}",
    )
    return compose
