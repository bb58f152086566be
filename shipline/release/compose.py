"""The docker-compose file of one release of an app in one environment, derived from the release request.

Nothing is validated here a second time: the service settings were validated with the app spec
(``shipline.spec``), the image and digest with the request (``shipline.release.plan``), and the ports
come from the allocator. What the environment's block grants comes with them: every instance drops every
Linux capability and gains no privilege (``no-new-privileges``), gets back only the capabilities its spec
asks for that the block allows (``allowed_capabilities``; the release flow has refused any other before),
and runs under the block's pids limit (``instance_pids_limit``), as the spec's ``service.user`` if set.

The template renders every value as a JSON string (and ``$`` as ``$$``), so no value can break out of the
field it belongs to or be interpolated by Compose.

Secrets are never written: a variable read from a Prefect Secret block (``{secret: NAME}``), and a plain
value under a name that looks secret (``shipline.spec.looks_secret``), stand in the file as a required
Compose variable, ``"DB_PASSWORD": "${SHIPLINE_SECRET_DB_PASSWORD:?…}"``. The deploy gives ``docker
compose up`` their values in its own environment (``passed_environment``), under that prefix so that no
app variable can set one that Compose, the Docker client or Python read themselves (``DOCKER_HOST``,
``COMPOSE_FILE``, ``PATH`` …); Compose substitutes each once, literally, and fails if one is missing.
Docker keeps the values in the container's configuration, so a restart of the container still has them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import jinja2
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shipline.config import PROJECT_ROOT
from shipline.errors import DeployError
from shipline.files import write_atomically
from shipline.release.plan import ReleaseRequest
from shipline.spec import SecretRef, ServiceSpec, looks_secret

PASSED_PREFIX = "SHIPLINE_SECRET_"
"""Prefix of the variables of ``docker compose up``'s environment that carry the app's secret values."""


class ComposeVariable(NamedTuple):
    """An app variable in the compose file: its value, written; or none, and where the deploy reads it."""

    name: str
    value: str | None
    source: str = ""

    @property
    def passed(self) -> bool:
        """Whether the deploy gives the value to ``docker compose up`` instead of the file holding it."""
        return self.value is None

    @property
    def reference(self) -> str:
        """``${SHIPLINE_SECRET_NAME:?…}``: Compose substitutes it, or stops when the deploy gave none."""
        return f"${{{PASSED_PREFIX}{self.name}:?no value given for {self.name} (from {self.source})}}"


class ComposeFile(BaseModel):
    """What one release's compose file holds: the request's service, one instance on each of ``ports``."""

    model_config = ConfigDict(frozen=True)
    request: ReleaseRequest
    release: int = Field(ge=1)
    ports: list[int] = Field(min_length=1, max_length=64)
    pids_limit: int = Field(ge=1)
    """Processes and threads each instance may have (the environment block's ``instance_pids_limit``)."""
    allowed_capabilities: list[str] = Field(default_factory=list)
    """The capabilities the environment's block allows (``allowed_capabilities``)."""
    address: str = "127.0.0.1"
    """Where every instance listens: its host's advertise address (the block's ``advertise_ip``), given
    in the spec's ``address_variable`` so that instances of two hosts may use the same port."""

    @field_validator("address")
    @classmethod
    def _an_ip_address(cls, value: str) -> str:
        return str(ipaddress.ip_address(value))  # the block's advertise_ip: an address, nothing else

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
    def variables(self) -> list[ComposeVariable]:
        """The app's variables in this environment, as written (the port variable is set per instance)."""
        variables = []
        for name, value in self.request.settings.environment.items():
            if isinstance(value, SecretRef):
                variables.append(ComposeVariable(name, None, f"the Secret block {value.secret}"))
            elif looks_secret(name):
                variables.append(ComposeVariable(name, None, "the app spec, its name looks secret"))
            else:
                variables.append(ComposeVariable(name, value))
        return variables

    @property
    def secrets(self) -> dict[str, str]:
        """The variables read from Prefect Secret blocks at deploy time: variable → block name."""
        return self.request.settings.secrets

    def passed_environment(self, secret_values: Mapping[str, str]) -> dict[str, str]:
        """What ``docker compose up`` needs in its environment: the value of every variable not written
        (``SHIPLINE_SECRET_{NAME}`` → value).

        Args:
            secret_values: The value of each variable in ``secrets`` (variable → value), read from its block.

        Raises:
            DeployError: naming a variable read from a block that ``secret_values`` lacks.
        """
        missing = sorted(set(self.secrets) - set(secret_values))
        if missing:
            raise DeployError(f"{self.project}: no value was read for {', '.join(missing)}")
        spec = self.request.settings.environment
        return {
            f"{PASSED_PREFIX}{v.name}": secret_values[v.name] if v.name in self.secrets else str(spec[v.name])
            for v in self.variables
            if v.passed
        }

    @property
    def capabilities(self) -> list[str]:
        """The capabilities every instance gets back: those its spec asks for that the block allows."""
        return [name for name in self.service.capabilities if name in self.allowed_capabilities]

    @property
    def project(self) -> str:
        return f"{self.app}-{self.env}"

    def service_name(self, port: int) -> str:
        return f"{self.app}-{port}"

    @property
    def service_names(self) -> list[str]:
        return [self.service_name(port) for port in self.ports]


def compose_file_for(
    request: ReleaseRequest,
    release: int,
    ports: list[int],
    *,
    pids_limit: int,
    allowed_capabilities: Sequence[str] = (),
    address: str = "127.0.0.1",
) -> ComposeFile:
    """The compose file of release ``release`` of ``request``, one instance on each of ``ports`` at
    ``address``, with the pids limit and the capabilities the environment's block allows."""
    return ComposeFile(
        request=request,
        release=release,
        ports=ports,
        pids_limit=pids_limit,
        allowed_capabilities=list(allowed_capabilities),
        address=address,
    )


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
