"""``shipline check``: what a delivery's spec stage would refuse, found locally in well under a second.

GitLab's CI Lint is the model: every problem at once, each with its file and line, before a push costs a
round trip through the workers. Checked: ``shipline.yaml`` against the app spec (every rule of
``shipline.spec``), the OS and middleware layers it names against those Shipline can build, and the
paths it names (artifact, JUnit report, scan paths) against links that lead out of the repository, and
its host mounts against the paths no environment may allow (which ones an environment allows is its
block's, checked by the delivery's spec stage). The capabilities it asks for are checked by name with the
spec (a name that is no Linux capability is listed with its line); which ones an environment allows is,
again, its block's (``allowed_capabilities``, the spec stage). Notes, which fail nothing: plain values
under names that look secret, which belong in a Prefect Secret block.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from shipline.build.layer_names import OS_LAYERS, middleware_names
from shipline.errors import BuildError, SpecError
from shipline.files import inside
from shipline.mounts import never_allowed
from shipline.spec import SPEC_FILE, AppSpec, load_spec, looks_secret


class SpecCheck(BaseModel):
    """The verdict on one repository's spec."""

    directory: str
    app: str | None = None
    problems: list[str] = []
    notes: list[str] = []
    """What passes but deserves a look: plain values that look like secrets."""

    @property
    def ok(self) -> bool:
        return not self.problems


def check_repository(directory: Path) -> SpecCheck:
    """Every problem a delivery of ``directory`` would meet at its spec stage (none: it would pass)."""
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
    return result


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
