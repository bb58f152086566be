"""The app spec, ``shipline.yaml`` at the root of an app's repository.

Validated before any work starts. An error names the field, its line in the file and what is expected,
for every problem at once, e.g. ``shipline.yaml:12 service.environments.prod.replicas: Input should be
greater than or equal to 1``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from shipline.capabilities import capability_names
from shipline.errors import SpecError
from shipline.names import NAME_PATTERN

SPEC_FILE = "shipline.yaml"
_VARIABLE = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_RELATIVE = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._/-]{0,254}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SECRET_BLOCK = re.compile(r"[a-z0-9-]{1,255}")
"""A Prefect block document name, as Prefect itself requires it: lower-case letters, digits and dashes."""
_SECRET_WORDS = ("PASSWORD", "PASSWD", "PASSPHRASE", "SECRET", "TOKEN", "CREDENTIAL", "PRIVATE")
MASK = "****"
"""What a masked plain value shows, where people read a release (``shipline releases --json``)."""
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?")


def _name(value: str, what: str) -> str:
    if NAME_PATTERN.fullmatch(value) is None:
        raise ValueError(
            f"{what} must be lower-case letters, digits and dashes, starting with a letter or digit"
        )
    return value


def _relative_path(value: str) -> str:
    if _RELATIVE.fullmatch(value) is None or ".." in Path(value).parts:
        raise ValueError("must be a path inside the repository (letters, digits, . _ - /; no '..')")
    return value


def _url_path(value: str) -> str:
    if not value.startswith("/") or re.search(r"\s", value) or _CONTROL.search(value):
        raise ValueError("must be a URL path starting with / and without spaces or control characters")
    return value


def _variable(value: str) -> str:
    if _VARIABLE.fullmatch(value) is None:
        raise ValueError(f"{value!r} is not a variable name ([A-Z_][A-Z0-9_]*)")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Mount(Strict):
    """A host path mounted into a build or into every instance (for example a JRE, read-only)."""

    source: str
    target: str
    read_only: bool = True

    @field_validator("source", "target")
    @classmethod
    def _absolute_clean_path(cls, value: str) -> str:
        if not value.startswith("/") or _CONTROL.search(value) or ".." in Path(value).parts:
            raise ValueError(f"{value!r} must be an absolute path without '..' or control characters")
        return value


class BuildSpec(Strict):
    """How to build the app inside its middleware image."""

    command: str = Field(description="Shell command run in the repository root, inside the middleware image.")
    artifact: str = Field(description="File or directory the build leaves, copied into the app image.")
    mounts: list[Mount] = Field(
        default_factory=list, description="Host paths mounted for the build (e.g. a JDK)."
    )

    @field_validator("artifact")
    @classmethod
    def _artifact(cls, value: str) -> str:
        return _relative_path(value)


class TestSpec(Strict):
    """How to run the unit tests, and where their JUnit report lands."""

    command: str
    junit: str = Field(description="JUnit XML report path, relative to the repository root.")

    @field_validator("junit")
    @classmethod
    def _junit(cls, value: str) -> str:
        return _relative_path(value)


class ScanSpec(Strict):
    """Static analysis: SonarQube when a block is configured, local tools otherwise."""

    sonar_project_key: str | None = None
    tools: list[str] = Field(default_factory=lambda: ["ruff", "bandit"])
    paths: list[str] = Field(default_factory=lambda: ["."])
    max_findings: dict[str, int] = Field(
        default_factory=lambda: {"ruff": 0, "bandit-high": 0, "bandit-medium": 0},
        description="Gate: the most findings allowed per tool (and bandit severity).",
    )

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - {"ruff", "bandit"})
        if unknown:
            raise ValueError(f"unknown scan tool(s) {unknown}; known: ruff, bandit")
        return value

    @field_validator("paths")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        return [_relative_path(v) for v in value]


class LayerRef(Strict):
    """An OS or middleware layer: a name and a version from templates/images/."""

    name: str
    version: str

    @field_validator("name")
    @classmethod
    def _layer_name(cls, value: str) -> str:
        return _name(value, "layer name")

    @field_validator("version")
    @classmethod
    def _layer_version(cls, value: str) -> str:
        if _VERSION.fullmatch(value) is None:
            raise ValueError("version must be letters, digits, '.', '_' or '-'")
        return value


class ImageSpec(Strict):
    """The three layers of the app's image."""

    os: LayerRef
    middleware: LayerRef
    copy_artifact_to: str = Field(
        default="/app",
        description="Where the artifact lands: a directory's contents go here, a file goes here by its name.",
    )
    command: list[str] = Field(min_length=1, description="What the container runs.")
    workdir: str = "/app"

    @field_validator("copy_artifact_to", "workdir")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or ".." in Path(value).parts or re.search(r"[\s\"'\\$`]", value):
            raise ValueError("must be an absolute path without spaces, quotes, '$' or '..'")
        return value


class CanarySpec(Strict):
    """A canary in one environment: after verification the new release takes ``weight`` % of the requests
    beside the live one for ``seconds``; it is promoted only if its 5xx rate and p99 latency, measured by
    nginx, stay within the limits — otherwise it is aborted and the live release never stops serving."""

    weight: int = Field(default=10, ge=1, le=99, description="Percent of the requests the canary takes.")
    seconds: float = Field(default=60, ge=1, le=3600, description="The analysis window.")
    max_error_rate: float = Field(default=0.01, ge=0, le=1, description="Largest share of 5xx answers.")
    max_p99_ms: float = Field(default=500, gt=0, le=600_000, description="Largest p99 latency, in ms.")
    min_requests: int = Field(
        default=20,
        ge=0,
        description="Fewer canary requests than this in the window is no evidence: the canary is aborted.",
    )


def looks_secret(variable: str) -> bool:
    """Whether a variable's name says it holds a secret: a part (between ``_``) names a password, secret,
    token, credential or private thing, or ends in KEY (``API_KEY``, ``APIKEY``; not ``KEYCLOAK_URL``).

    A plain value under such a name is never written into a compose file or an artifact (it is passed to
    ``docker compose`` through its environment instead) and is masked where a release is shown.
    """
    return any(
        part.endswith("KEY") or any(word in part for word in _SECRET_WORDS) for part in variable.split("_")
    )


class SecretRef(Strict):
    """A variable's value kept in a Prefect Secret block, read by the release flow when it deploys.

    Written ``DB_PASSWORD: {secret: payments-db}``. Only the block's name travels with the release
    (request, etcd record, compose file, artifact); the value reaches the app's containers alone.
    """

    secret: str
    """The Secret block's name (``prefect block create secret``, or Blocks in the UI)."""

    @field_validator("secret")
    @classmethod
    def _block_name(cls, value: str) -> str:
        return _secret_block(value)


def _secret_block(name: object) -> str:
    if not isinstance(name, str) or _SECRET_BLOCK.fullmatch(name) is None:
        raise ValueError(
            f"secret {name!r} is not a Prefect block name (lower-case letters, digits and dashes)"
        )
    return name


def _environment_value(value: object) -> object:
    """A variable's value: text, or ``{secret: BLOCK}`` with a valid Prefect block name."""
    if isinstance(value, str | SecretRef):
        return value
    if isinstance(value, dict) and set(value) == {"secret"}:
        return SecretRef(secret=_secret_block(value["secret"]))
    raise ValueError(
        "must be text (quote numbers and booleans) or {secret: NAME}, NAME a Prefect Secret block"
    )


EnvironmentValue = Annotated[str | SecretRef, BeforeValidator(_environment_value)]
"""A variable's value in the spec: text as it is, or a reference to a Prefect Secret block."""


class EnvironmentSettings(Strict):
    """Settings of the app in one environment."""

    replicas: int | None = Field(default=None, ge=1, le=64)
    environment: dict[str, EnvironmentValue] = Field(default_factory=dict)
    """Variables of every instance: text, or ``{secret: BLOCK}`` read from a Prefect Secret block."""
    requires_approval: bool = False
    """Wait for an operator before deploying here, even where the environment's block does not ask for it
    (a spec can add the gate; it never lifts the one an operator set)."""
    canary: CanarySpec | None = None
    """Progressive delivery here: the new release first takes a share of the traffic, judged by nginx's
    figures (dynamic routing only), before it takes all of it."""

    @field_validator("environment")
    @classmethod
    def _variables(cls, value: dict[str, str | SecretRef]) -> dict[str, str | SecretRef]:
        for key, item in value.items():
            _variable(key)
            if isinstance(item, str) and "\x00" in item:
                raise ValueError(f"the value of {key} holds a NUL byte")
        return value

    @property
    def secrets(self) -> dict[str, str]:
        """The variables read from Secret blocks: variable → block name."""
        return {key: item.secret for key, item in self.environment.items() if isinstance(item, SecretRef)}

    def masked(self) -> EnvironmentSettings:
        """These settings with every plain value under a secret-looking name (``looks_secret``) masked."""
        shown = {
            key: MASK if isinstance(item, str) and looks_secret(key) else item
            for key, item in self.environment.items()
        }
        return self.model_copy(update={"environment": shown})


class ServiceSpec(Strict):
    """How instances run."""

    port_variable: str = "PORT"
    address_variable: str = Field(
        default="BIND",
        description="The variable that gives each instance the address to listen on: its host's "
        "advertise address (the environment block's advertise_ip), set per instance like the port.",
    )
    health_path: str = "/healthz"
    health_timeout_seconds: float = Field(default=60, gt=0, le=1800)
    stop_grace_seconds: int = Field(default=10, ge=1, le=600)
    cpus: float | None = Field(default=None, gt=0, le=256)
    memory: str | None = Field(default=None, pattern=r"^[1-9][0-9]{0,5}[kmg]$")
    mounts: list[Mount] = Field(default_factory=list)
    user: str | None = Field(
        default=None,
        description="Who the app runs as (uid, uid:gid, or a name in the image); else the image's.",
    )
    capabilities: list[str] = Field(
        default_factory=list,
        description="Linux capabilities every instance gets (e.g. NET_BIND_SERVICE); each environment's "
        "block must allow them. None by default: instances run with no capability.",
    )
    environments: dict[str, EnvironmentSettings] = Field(default_factory=dict)
    log_retention_days: int | None = Field(default=None, ge=1, le=3650)
    """Days the app's log lines are kept, if fewer than the platform keeps (none: the platform's)."""

    @field_validator("port_variable", "address_variable")
    @classmethod
    def _port_variable(cls, value: str) -> str:
        return _variable(value)

    @model_validator(mode="after")
    def _address_is_not_the_port(self) -> ServiceSpec:
        if self.address_variable == self.port_variable:
            raise ValueError(f"address_variable and port_variable are both {self.port_variable}")
        return self

    @field_validator("health_path")
    @classmethod
    def _health_path(cls, value: str) -> str:
        return _url_path(value)

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and _USER.fullmatch(value) is None:
            raise ValueError("must be a uid, uid:gid, or a user (and group) name of the image")
        return value

    @field_validator("capabilities")
    @classmethod
    def _capabilities(cls, value: list[str]) -> list[str]:
        return capability_names(value)

    def in_environment(self, env: str) -> EnvironmentSettings:
        """The settings of ``env``: replicas and variables as the spec gives them, defaults otherwise."""
        return self.environments.get(env, EnvironmentSettings())

    def masked(self) -> ServiceSpec:
        """This section with the plain values of secret-looking variables masked, in every environment."""
        return self.model_copy(
            update={"environments": {env: s.masked() for env, s in self.environments.items()}}
        )

    @field_validator("environments")
    @classmethod
    def _environment_names(cls, value: dict[str, EnvironmentSettings]) -> dict[str, EnvironmentSettings]:
        for name in value:
            _name(name, "environment name")
        return value


class HttpCheck(Strict):
    """GET a path; expect a status and, optionally, a text in the body."""

    path: str = "/"
    status: int = Field(default=200, ge=100, le=599)
    contains: str | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _url_path(value)


class AutoTests(Strict):
    """What to run against a release before it takes traffic."""

    http: list[HttpCheck] = Field(default_factory=list)
    command: list[str] = Field(default_factory=list)
    """Run on the environment's host with BASE_URL in its environment; exit 0 means pass."""
    timeout_seconds: float = Field(default=120, gt=0)


class AppSpec(Strict):
    """Everything Shipline needs to deliver an app."""

    app: str
    build: BuildSpec
    test: TestSpec | None = None
    scan: ScanSpec = Field(default_factory=ScanSpec)
    image: ImageSpec
    service: ServiceSpec = Field(default_factory=ServiceSpec)
    auto_tests: AutoTests = Field(default_factory=AutoTests)
    notifications: list[str] = Field(default_factory=list, description="Prefect notification block names.")

    @field_validator("app")
    @classmethod
    def _app_name(cls, value: str) -> str:
        return _name(value, "app")

    @model_validator(mode="after")
    def _port_not_in_environment(self) -> AppSpec:
        for env, settings in self.service.environments.items():
            for variable in (self.service.port_variable, self.service.address_variable):
                if variable in settings.environment:
                    raise ValueError(
                        f"service.environments.{env}.environment sets {variable}, which Shipline sets per "
                        "instance"
                    )
        return self

    @model_validator(mode="after")
    def _own_secrets_only(self) -> AppSpec:
        problems = foreign_secrets(self.app, self.service)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def foreign_secrets(app: str, service: ServiceSpec) -> list[str]:
    """The variables that name a Secret block of another app: an app reads only the blocks named after it,
    ``{app}`` or ``{app}-…`` (``payments-db`` for ``payments``), so no spec can take another team's secret
    (or any other Secret block an operator keeps) into its containers."""
    return [
        f"service.environments.{env}.environment.{variable}: secret {block!r} is not {app}'s "
        f"(an app reads only the Secret blocks named {app} or {app}-…)"
        for env, settings in service.environments.items()
        for variable, block in settings.secrets.items()
        if block != app and not block.startswith(f"{app}-")
    ]


def _lines(node: yaml.Node, path: tuple[str | int, ...], found: dict[tuple[str | int, ...], int]) -> None:
    found.setdefault(path, node.start_mark.line + 1)  # a key's own line wins over where its value starts
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            found[(*path, str(key.value))] = key.start_mark.line + 1
            _lines(value, (*path, str(key.value)), found)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _lines(item, (*path, index), found)


def _line_of(loc: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]) -> int:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def parse_spec(text: str, *, source: str = SPEC_FILE) -> AppSpec:
    """Parse and validate spec text.

    Raises:
        SpecError: listing every problem as ``source:LINE field: what is expected``.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{source}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict) or node is None:
        raise SpecError(f"{source}:1: expected a mapping with app, build, image …")
    lines: dict[tuple[str | int, ...], int] = {}
    _lines(node, (), lines)
    try:
        return AppSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc: tuple[str | int, ...] = tuple(error["loc"])
            field = ".".join(str(part) for part in loc) or "(top level)"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{source}:{_line_of(loc, lines)} {field}: {message}")
        raise SpecError(
            "invalid app spec:\n  " + "\n  ".join(problems),
            hint="see the App spec section of the README",
        ) from exc


def load_spec(repository: Path) -> AppSpec:
    """Read and validate ``shipline.yaml`` at the root of ``repository``.

    Raises:
        SpecError: if the file is missing or invalid.
    """
    path = repository / SPEC_FILE
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise SpecError(
            f"{SPEC_FILE} not found at the root of the repository", hint="onboard the app with one"
        ) from exc
    return parse_spec(text)
