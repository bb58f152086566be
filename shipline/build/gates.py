"""Gates the operator owns: the least every delivery must pass, set in the environment blocks.

A delivery is held to the gates of the ``ci`` block (where it is built and tested) and of the block of
every environment it releases to; of each rule the strictest wins. The spec may ask for more — more
tools, lower limits — never for less:

- ``require_tests``: the spec must have a ``test`` section, and its report must hold a test case that ran;
- ``required_scan_tools``: ``scan.tools`` must list each of them (they run even when SonarQube does);
- ``max_findings``: the most findings any spec may allow per gate key; a spec that allows more, or leaves
  the key out, is held to the block's number (for the tools it runs);
- ``require_sonarqube``: ``true`` for every app or a list of app names; the spec must name its
  ``scan.sonar_project_key`` and a ``shipline-sonarqube`` block must be saved.

Each refusal names the spec field, the rule and the block (field) that sets it. This module is pure: the
blocks are read by the stages (``ShiplineEnvironment.gates_for``) and by ``shipline check`` over HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, NonNegativeInt

from shipline.names import NAME_PATTERN
from shipline.spec import ScanSpec, TestSpec

BLOCK = "shipline-environment"
BUILT_IN = "ci"
"""The environment every delivery is built and tested in: its block's gates always apply."""
SCAN_TOOLS = ("ruff", "bandit")
FINDING_KEYS = ("ruff", "bandit-high", "bandit-medium", "bandit-low")
"""The gate keys of ``max_findings``: ruff's findings, and bandit's by severity."""
DEFAULT_MAX_FINDINGS = {"bandit-high": 0}
"""No high-severity security finding passes, wherever bandit runs; the rest is the spec's to set."""


def _known_tools(value: list[str]) -> list[str]:
    if unknown := sorted(set(value) - set(SCAN_TOOLS)):
        raise ValueError(f"unknown scan tool(s) {unknown}; known: {', '.join(SCAN_TOOLS)}")
    return value


def _known_keys(value: dict[str, int]) -> dict[str, int]:
    if unknown := sorted(set(value) - set(FINDING_KEYS)):
        raise ValueError(f"unknown gate key(s) {unknown}; known: {', '.join(FINDING_KEYS)}")
    return value


def _app_names(value: bool | list[str]) -> bool | list[str]:
    for name in value if isinstance(value, list) else []:
        if NAME_PATTERN.fullmatch(name) is None:
            raise ValueError(f"{name!r} is not an app name (lower-case letters, digits and dashes)")
    return value


ScanTools = Annotated[list[str], AfterValidator(_known_tools)]
FindingLimits = Annotated[dict[str, NonNegativeInt], AfterValidator(_known_keys)]
SonarApps = Annotated[bool | list[str], AfterValidator(_app_names)]


class EnvironmentGates(BaseModel):
    """The gate fields of one environment block, with the block's defaults; and the capabilities the block
    lets instances have (``allowed_capabilities``), so that ``shipline check`` finds a spec the release
    would refuse (``shipline.capabilities``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    require_tests: bool = True
    required_scan_tools: ScanTools = []
    max_findings: FindingLimits = dict(DEFAULT_MAX_FINDINGS)
    require_sonarqube: SonarApps = False
    allowed_capabilities: list[str] = []

    def requires_sonarqube(self, app: str) -> bool:
        """Whether this block requires SonarQube of ``app`` (every app, or ``app`` by name)."""
        return self.require_sonarqube is True or (
            isinstance(self.require_sonarqube, list) and app in self.require_sonarqube
        )


class FindingLimit(BaseModel):
    """The most findings of one gate key, and where that number is set."""

    allowed: int
    set_by: str
    """``scan.max_findings`` or ``max_findings of the shipline-environment block 'ci'``."""


class DeliveryGates(BaseModel):
    """The gates one delivery is held to: per rule, the environments whose blocks set it."""

    app: str
    environments: list[str]
    """The blocks read, ``ci`` first."""
    tests: list[str] = []
    scan_tools: dict[str, list[str]] = {}
    max_findings: dict[str, tuple[int, list[str]]] = {}
    """Per gate key: the lowest number any block allows, and the blocks that set it."""
    sonarqube: list[str] = []


def gated_environments(environments: Iterable[str]) -> list[str]:
    """The environments whose blocks gate a delivery to ``environments``: ``ci``, then each of them."""
    return list(dict.fromkeys([BUILT_IN, *environments]))


def delivery_gates(app: str, blocks: Mapping[str, EnvironmentGates]) -> DeliveryGates:
    """Merge the gates of ``blocks`` (environment → its gates) for a delivery of ``app``: a rule any
    block sets applies, and of the limits the lowest wins."""
    tools: dict[str, list[str]] = {}
    limits: dict[str, tuple[int, list[str]]] = {}
    for env, gates in blocks.items():
        for tool in gates.required_scan_tools:
            tools.setdefault(tool, []).append(env)
        for key, allowed in gates.max_findings.items():
            lowest, where = limits.get(key, (allowed, []))
            if allowed < lowest:
                lowest, where = allowed, []
            limits[key] = (lowest, [*where, env] if allowed == lowest else where)
    return DeliveryGates(
        app=app,
        environments=list(blocks),
        tests=[env for env, gates in blocks.items() if gates.require_tests],
        scan_tools={tool: tools[tool] for tool in SCAN_TOOLS if tool in tools},
        max_findings={key: limits[key] for key in FINDING_KEYS if key in limits},
        sonarqube=[env for env, gates in blocks.items() if gates.requires_sonarqube(app)],
    )


def set_in(environments: Sequence[str], verb: str | None = None) -> str:
    """Where a rule is set: ``the shipline-environment block 'ci'`` (+ ``requires``), or ``… blocks 'ci',
    'prod'`` (+ ``require``)."""
    names = ", ".join(repr(env) for env in environments)
    if len(environments) == 1:
        return f"the {BLOCK} block {names}" + (f" {verb}s" if verb else "")
    return f"the {BLOCK} blocks {names}" + (f" {verb}" if verb else "")


def unit_test_problems(test: TestSpec | None, gates: DeliveryGates) -> list[str]:
    """What the unit-test stage refuses before it runs anything: no ``test`` section where tests are
    required."""
    if test is not None or not gates.tests:
        return []
    return [
        f"test is not set, but {set_in(gates.tests, 'require')} unit tests (require_tests): give the spec "
        "a test section (command, junit)"
    ]


def no_test_case_ran(test: TestSpec, gates: DeliveryGates) -> str | None:
    """The refusal of a report with no test case that ran (none, or all skipped) where tests are
    required."""
    if not gates.tests:
        return None
    return (
        f"test.command ran no test case ({test.junit} holds none that ran), but "
        f"{set_in(gates.tests, 'require')} unit tests (require_tests)"
    )


def scan_problems(scan: ScanSpec, gates: DeliveryGates) -> list[str]:
    """What the scan stage refuses before it scans: a required tool left out, a required SonarQube
    analysis without a project key."""
    problems = [
        f"scan.tools leaves out {tool}, which {set_in(where, 'require')} (required_scan_tools)"
        for tool, where in gates.scan_tools.items()
        if tool not in scan.tools
    ]
    if gates.sonarqube and not scan.sonar_project_key:
        problems.append(
            f"scan.sonar_project_key is not set, but {set_in(gates.sonarqube, 'require')} SonarQube for "
            f"{gates.app} (require_sonarqube)"
        )
    return problems


def _runs(key: str, tools: Sequence[str]) -> bool:
    return key.split("-", 1)[0] in tools


def finding_limits(scan: ScanSpec, gates: DeliveryGates) -> dict[str, FindingLimit]:
    """The limit of each gate key for the tools the spec runs: the spec's, unless a block allows less
    (or the spec leaves the key out), then the block's."""
    limits: dict[str, FindingLimit] = {}
    for key in [*FINDING_KEYS, *sorted(set(scan.max_findings) - set(FINDING_KEYS))]:
        if not _runs(key, scan.tools):
            continue
        own = scan.max_findings.get(key)
        block = gates.max_findings.get(key)
        if block is not None and (own is None or own > block[0]):
            limits[key] = FindingLimit(allowed=block[0], set_by=f"max_findings of {set_in(block[1])}")
        elif own is not None:
            limits[key] = FindingLimit(allowed=own, set_by="scan.max_findings")
    return limits


def held_limits(scan: ScanSpec, gates: DeliveryGates) -> list[str]:
    """A note for each limit of the spec that a block overrules: more than the block allows, or none."""
    notes = []
    for key, (allowed, where) in gates.max_findings.items():
        own = scan.max_findings.get(key)
        if not _runs(key, scan.tools) or (own is not None and own <= allowed):
            continue
        said = (
            f"scan.max_findings.{key} allows {own}, more than the {allowed} {set_in(where, 'allow')}"
            if own is not None
            else f"scan.max_findings leaves out {key}, which {set_in(where, 'limit')} to {allowed}"
        )
        notes.append(f"{said} (max_findings); held to {allowed}")
    return notes
