"""``shipline check``: what a delivery's spec stage would refuse, found locally in well under a second.

GitLab's CI Lint is the model: every problem at once, each with its file and line, before a push costs a
round trip through the workers. Checked: ``shipline.yaml`` against the app spec (every rule of
``shipline.spec``), the OS and middleware layers it names against those Shipline can build, and the
paths it names (artifact, JUnit report, scan paths) against links that lead out of the repository, and
its host mounts against the paths no environment may allow (which ones an environment allows is its
block's, checked by the delivery's spec stage), and — where the Prefect server answers — the operators'
gates of the ci block and of the environments the delivery would release to (``shipline.build.gates``).
The capabilities it asks for are checked by name with the spec (a name that is no Linux capability is
listed with its line), and — where those blocks were read — against each release environment's
``allowed_capabilities``, as the spec stage checks them. Notes, which fail nothing: plain values under
names that look secret, which belong in a Prefect Secret block; limits of the spec that a block overrules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
from pydantic import BaseModel, ValidationError

from shipline.build.gates import (
    BLOCK,
    BUILT_IN,
    EnvironmentGates,
    delivery_gates,
    gated_environments,
    held_limits,
    scan_problems,
    unit_test_problems,
)
from shipline.build.layer_names import OS_LAYERS, middleware_names
from shipline.capabilities import capability_problems
from shipline.errors import BuildError, ConfigError, ServiceUnavailableError, SpecError
from shipline.files import inside
from shipline.mounts import never_allowed
from shipline.names import validate_name
from shipline.prefect_auth import environment_auth
from shipline.spec import SPEC_FILE, AppSpec, load_spec, looks_secret


class SpecCheck(BaseModel):
    """The verdict on one repository's spec."""

    directory: str
    app: str | None = None
    problems: list[str] = []
    notes: list[str] = []
    """What passes but deserves a look: plain values that look like secrets, limits held to a block's."""
    gates: list[str] = []
    """The environments whose blocks' gates were checked (none: they were not)."""

    @property
    def ok(self) -> bool:
        return not self.problems


def check_repository(directory: Path, blocks: Mapping[str, EnvironmentGates] | None = None) -> SpecCheck:
    """Every problem a delivery of ``directory`` would meet at its spec stage (none: it would pass), and
    at its unit-test and scan stages under the gates of ``blocks`` (environment → gates) when given."""
    result = SpecCheck(directory=str(directory))
    try:
        spec = load_spec(directory)
    except SpecError as exc:
        lines = exc.message.splitlines()
        result.problems = [line.strip() for line in lines[1:]] if len(lines) > 1 else [exc.message]
        return result
    result.app = spec.app
    image = spec.image
    if image.os.name not in OS_LAYERS:
        result.problems.append(
            f"{SPEC_FILE} image.os.name: unknown OS layer {image.os.name!r} ({', '.join(OS_LAYERS)})"
        )
    if image.middleware.name not in middleware_names():
        result.problems.append(
            f"{SPEC_FILE} image.middleware.name: unknown middleware {image.middleware.name!r} "
            f"({', '.join(middleware_names())})"
        )
    paths = [("build.artifact", spec.build.artifact)]
    if spec.test is not None:
        paths.append(("test.junit", spec.test.junit))
    paths += [("scan.paths", path) for path in spec.scan.paths]
    for what, path in paths:
        try:
            inside(directory, path, what=what)
        except BuildError as exc:
            result.problems.append(f"{SPEC_FILE} {exc.message}")
    # Host mounts no environment may allow; what each environment allows is its block's (the spec stage).
    for field, mounts in (("build.mounts", spec.build.mounts), ("service.mounts", spec.service.mounts)):
        for index, mount in enumerate(mounts):
            if (reason := never_allowed(mount.source)) is not None:
                result.problems.append(f"{SPEC_FILE} {field}[{index}] {mount.source}: {reason}")
    result.notes = plain_secret_notes(spec)
    if blocks is not None:
        gates = delivery_gates(spec.app, blocks)
        refused = unit_test_problems(spec.test, gates) + scan_problems(spec.scan, gates)
        result.problems += [f"{SPEC_FILE} {problem}" for problem in refused]
        result.notes += [f"{SPEC_FILE} {note}" for note in held_limits(spec.scan, gates)]
        for env, block in blocks.items():  # the environments released to: ci only builds and tests
            if env != BUILT_IN:
                refused = capability_problems(
                    spec.service.capabilities,
                    block.allowed_capabilities,
                    env=env,
                    field="service.capabilities",
                )
                result.problems += [f"{SPEC_FILE} {problem}" for problem in refused]
        result.gates = list(blocks)
    return result


def read_environment_gates(
    api_url: str, environments: Sequence[str], *, timeout: float = 2.0
) -> dict[str, EnvironmentGates]:
    """The gates of the ci block and of each block of ``environments``, read from Prefect's API (without
    importing Prefect, so that ``shipline check`` stays fast).

    Raises:
        ServiceUnavailableError: if Prefect does not answer, or refuses the read.
        ConfigError: if an environment has no block, or an invalid one.
    """
    found: dict[str, EnvironmentGates] = {}
    with httpx.Client(timeout=timeout, trust_env=False, auth=environment_auth(api_url)) as client:
        for env in gated_environments(environments):
            validate_name(env, what="environment")
            url = f"{api_url.rstrip('/')}/block_types/slug/{BLOCK}/block_documents/name/{env}"
            try:
                response = client.get(url)
            except httpx.HTTPError as exc:
                raise ServiceUnavailableError(
                    f"Prefect at {api_url} does not answer: {type(exc).__name__}"
                ) from exc
            if response.status_code == 404:
                raise ConfigError(f"no environment {env!r}: there is no {BLOCK}/{env} block")
            if response.status_code >= 400:
                raise ServiceUnavailableError(f"Prefect at {api_url} answered {response.status_code}")
            try:
                found[env] = EnvironmentGates.model_validate(response.json().get("data", {}))
            except (ValueError, ValidationError) as exc:
                raise ConfigError(f"the {BLOCK} block {env!r} holds invalid gates: {exc}") from exc
    return found


def plain_secret_notes(spec: AppSpec) -> list[str]:
    """A note for each plain value under a secret-looking name: it works (and is kept out of compose
    files and artifacts), but it is in the repository for everyone who can read it."""
    return [
        f"{SPEC_FILE} service.environments.{env}.environment.{variable}: a plain value under a name that "
        f"looks secret is in the repository; an operator can keep it in a Prefect Secret block, and the "
        f"spec name it: {variable}: {{secret: {spec.app}-{variable.lower().replace('_', '-')}}}"
        for env, settings in spec.service.environments.items()
        for variable, value in settings.environment.items()
        if isinstance(value, str) and looks_secret(variable)
    ]
