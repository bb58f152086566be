"""The docker-compose file of one release of an app in one environment, derived from the release request.

Nothing is validated here a second time: the service settings were validated with the app spec
(``shipline.spec``), the image and digest with the request (``shipline.release.plan``), and the ports
come from the allocator. The template renders every value as a JSON string (and ``$`` as ``$$``), so no
value can break out of the field it belongs to or be interpolated by Compose.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
from pydantic import BaseModel, ConfigDict, Field

from shipline.config import PROJECT_ROOT
from shipline.files import write_atomically
from shipline.release.plan import ReleaseRequest
from shipline.spec import ServiceSpec


class ComposeFile(BaseModel):
    """What one release's compose file holds: the request's service, one instance on each of ``ports``."""

    model_config = ConfigDict(frozen=True)
    request: ReleaseRequest
    release: int = Field(ge=1)
    ports: list[int] = Field(min_length=1, max_length=64)

    @property
    def app(self) -> str:
        return self.request.app

    @property
    def env(self) -> str:
        return self.request.env

    @property
    def service(self) -> ServiceSpec:
        return self.request.service

    @property
    def environment(self) -> dict[str, str]:
        """The app's variables in this environment (the port variable is set per instance)."""
        return self.request.settings.environment

    @property
    def project(self) -> str:
        return f"{self.app}-{self.env}"

    def service_name(self, port: int) -> str:
        return f"{self.app}-{port}"

    @property
    def service_names(self) -> list[str]:
        return [self.service_name(port) for port in self.ports]


def compose_file_for(request: ReleaseRequest, release: int, ports: list[int]) -> ComposeFile:
    """The compose file of release ``release`` of ``request``, one instance on each of ``ports``."""
    return ComposeFile(request=request, release=release, ports=ports)


_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(PROJECT_ROOT / "templates" / "compose"),
    undefined=jinja2.StrictUndefined,
    autoescape=False,  # noqa: S701 - renders YAML; every value passes through tojson
    keep_trailing_newline=True,
)
_environment.filters["compose_literal"] = lambda value: str(value).replace("$", "$$")


def render_compose(compose: ComposeFile) -> str:
    """The compose file's text."""
    return _environment.get_template("docker-compose.yml.j2").render(c=compose, s=compose.service)


def release_dir(releases_dir: Path, app: str, env: str, number: int) -> Path:
    """The directory of one release under ``releases_dir`` (``Settings.releases_dir``)."""
    return releases_dir / app / env / str(number)


def compose_path(releases_dir: Path, compose: ComposeFile) -> Path:
    """Where a release's compose file is kept on the environment's host, in its release directory."""
    return release_dir(releases_dir, compose.app, compose.env, compose.release) / "docker-compose.yml"


def write_compose_file(releases_dir: Path, compose: ComposeFile) -> tuple[Path, str]:
    """Render the compose file and write it in one step; return where, and its text."""
    text = render_compose(compose)
    path = compose_path(releases_dir, compose)
    write_atomically(path, text)
    return path, text
