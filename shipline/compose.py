"""The docker-compose file of one app in one environment: validated input, rendered from a template.

Every value is validated here before ``templates/compose/docker-compose.yml.j2`` renders: names match
``[a-z0-9][a-z0-9-]*``, ports are integers, variable names are shell-style, paths are absolute and
free of control characters, the image is referenced by digest. The template then renders every value
as a JSON string, so nothing can break out of the field it belongs to.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any, Literal

import jinja2
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shipline.config import PROJECT_ROOT
from shipline.errors import ConfigError, DeployError
from shipline.names import validate_name, validate_port

_VARIABLE = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
_MEMORY = re.compile(r"[1-9][0-9]{0,5}[kmg]")
_IMAGE = re.compile(r"[a-z0-9][a-z0-9._:/-]{0,254}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Mount(BaseModel):
    """A host path mounted into every instance (for example a JRE, read-only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    source: str
    target: str
    read_only: bool = True

    @field_validator("source", "target")
    @classmethod
    def _absolute_clean_path(cls, value: str) -> str:
        if not value.startswith("/") or _CONTROL.search(value) or ".." in Path(value).parts:
            raise ValueError(f"{value!r} must be an absolute path without '..' or control characters")
        return value


class Instance(BaseModel):
    """One container of the app: its own compose service, its own port."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    port: int

    @field_validator("port")
    @classmethod
    def _port(cls, value: int) -> int:
        return validate_port(value, what="instance port")


class ComposeDeployment(BaseModel):
    """Everything the compose template needs, checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    app: str
    env: str
    release: int = Field(ge=1)
    image: str
    """Repository, e.g. 127.0.0.1:5000/apps/shop."""
    digest: str
    instances: list[Instance] = Field(min_length=1, max_length=64)
    port_variable: str = "PORT"
    health_path: str = "/healthz"
    environment: dict[str, str] = Field(default_factory=dict)
    command: list[str] = Field(default_factory=list)
    mounts: list[Mount] = Field(default_factory=list)
    cpus: float | None = Field(default=None, gt=0, le=256)
    memory: str | None = None
    healthcheck: list[str] = Field(default_factory=list)
    restart: Literal["no", "always", "unless-stopped", "on-failure"] = "unless-stopped"
    stop_grace_seconds: int = Field(default=10, ge=1, le=600)

    @field_validator("app")
    @classmethod
    def _app(cls, value: str) -> str:
        return validate_name(value, what="app name")

    @field_validator("env")
    @classmethod
    def _env(cls, value: str) -> str:
        return validate_name(value, what="environment")

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if _IMAGE.fullmatch(value) is None or "@" in value:
            raise ValueError(f"{value!r} is not an image repository (lower-case, no tag or digest)")
        return value

    @field_validator("digest")
    @classmethod
    def _digest(cls, value: str) -> str:
        if _DIGEST.fullmatch(value) is None:
            raise ValueError(f"{value!r} is not a sha256 digest: apps are deployed by digest, never by tag")
        return value

    @field_validator("port_variable")
    @classmethod
    def _port_variable(cls, value: str) -> str:
        if _VARIABLE.fullmatch(value) is None:
            raise ValueError(f"{value!r} is not a variable name ([A-Z_][A-Z0-9_]*)")
        return value

    @field_validator("health_path")
    @classmethod
    def _health_path(cls, value: str) -> str:
        if not value.startswith("/") or _CONTROL.search(value) or " " in value:
            raise ValueError(f"{value!r} is not a URL path (starts with /, no spaces)")
        return value

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if _VARIABLE.fullmatch(key) is None:
                raise ValueError(f"{key!r} is not a variable name ([A-Z_][A-Z0-9_]*)")
            if "\x00" in item:
                raise ValueError(f"the value of {key} holds a NUL byte")
        return value

    @field_validator("command", "healthcheck")
    @classmethod
    def _arguments(cls, value: list[str]) -> list[str]:
        if any("\x00" in argument for argument in value):
            raise ValueError("an argument holds a NUL byte")
        return value

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is not None and _MEMORY.fullmatch(value) is None:
            raise ValueError(f"{value!r} is not a memory size like 256m or 1g")
        return value

    @model_validator(mode="after")
    def _distinct_ports(self) -> ComposeDeployment:
        ports = [instance.port for instance in self.instances]
        if len(set(ports)) != len(ports):
            raise ValueError(f"instance ports repeat: {ports}")
        if self.port_variable in self.environment:
            raise ValueError(f"{self.port_variable} is set per instance; remove it from the environment")
        return self

    @property
    def project(self) -> str:
        return f"{self.app}-{self.env}"

    @property
    def image_reference(self) -> str:
        return f"{self.image}@{self.digest}"

    def service_name(self, port: int) -> str:
        return f"{self.app}-{port}"


class _Rendered(BaseModel):
    """An instance as the template sees it."""

    service: str
    port: int


def build_deployment(**values: object) -> ComposeDeployment:
    """Validate compose values, turning pydantic's report into one error that names each bad field.

    Raises:
        ConfigError: naming every invalid field; nothing is rendered.
    """
    try:
        return ComposeDeployment.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'deployment'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigError(
            f"invalid deployment values: {problems}", hint="fix the app's shipline.yaml"
        ) from exc


_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(PROJECT_ROOT / "templates" / "compose"),
    undefined=jinja2.StrictUndefined,
    autoescape=False,  # noqa: S701 - renders YAML; every value passes through tojson
    keep_trailing_newline=True,
)


_environment.filters["compose_literal"] = lambda value: str(value).replace("$", "$$")


def render_compose(deployment: ComposeDeployment) -> str:
    """The compose file text (one service per instance)."""
    instances = [
        _Rendered(service=deployment.service_name(i.port), port=i.port) for i in deployment.instances
    ]
    return _environment.get_template("docker-compose.yml.j2").render(d=deployment, instances=instances)


def check_compose(path: Path, compose_binary: str) -> dict[str, Any]:
    """Have Compose itself parse the file; return the normalised model it sees.

    Raises:
        DeployError: with Compose's own complaint if it rejects the file.
    """
    done = subprocess.run(
        [compose_binary, "-f", str(path), "config", "--format", "yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise DeployError(f"docker compose rejects {path.name}: {done.stderr.strip()}")
    loaded = yaml.safe_load(done.stdout)
    return loaded if isinstance(loaded, dict) else {}
