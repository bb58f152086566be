"""Gates the operator owns: the blocks' gates merged (strictest wins), a stricter spec kept, a looser one
refused or held to the block's number, each message naming the spec field, the rule and the block."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from blocks.environment import ShiplineEnvironment
from shipline.build.check import check_repository
from shipline.build.gates import (
    DeliveryGates,
    EnvironmentGates,
    FindingLimit,
    delivery_gates,
    finding_limits,
    gated_environments,
    held_limits,
    no_test_case_ran,
    scan_problems,
    unit_test_problems,
)
from shipline.build.scan import run_local_scan
from shipline.config import PROJECT_ROOT
from shipline.spec import ScanSpec, load_spec
from shipline.spec import TestSpec as UnitTests
from tests.cli import shipline
from tests.images import free_ports

TESTS = UnitTests(command="pytest", junit="reports/junit.xml")


def gates(app: str = "shop", **blocks: EnvironmentGates) -> DeliveryGates:
    return delivery_gates(app, {"ci": blocks.pop("ci", EnvironmentGates()), **blocks})


def test_ci_first_then_each_environment_once() -> None:
    assert gated_environments(["pre", "prod"]) == ["ci", "pre", "prod"]
    assert gated_environments([]) == ["ci"]
    assert gated_environments(["ci", "pre", "pre"]) == ["ci", "pre"]


def test_the_defaults_require_tests_and_no_high_bandit_finding_and_the_samples_meet_them() -> None:
    block = ShiplineEnvironment(work_pool="ci").gates()
    assert block == EnvironmentGates()
    assert (block.require_tests, block.required_scan_tools, block.max_findings, block.require_sonarqube) == (
        True,
        [],
        {"bandit-high": 0},
        False,
    )
    for sample in ("hello-python", "hello-java"):
        spec = load_spec(PROJECT_ROOT / "examples" / sample)
        merged = gates(spec.app, pre=block, prod=block)
        assert unit_test_problems(spec.test, merged) == []
        assert scan_problems(spec.scan, merged) == []
        assert held_limits(spec.scan, merged) == []


def test_the_strictest_rule_of_every_block_wins_and_says_where_it_is_set() -> None:
    merged = gates(
        "shop",
        ci=EnvironmentGates(require_tests=False, max_findings={"ruff": 5, "bandit-high": 0}),
        pre=EnvironmentGates(require_tests=False, required_scan_tools=["ruff"], max_findings={"ruff": 2}),
        prod=EnvironmentGates(
            required_scan_tools=["bandit", "ruff"],
            max_findings={"ruff": 2, "bandit-medium": 3},
            require_sonarqube=["other", "shop"],
        ),
    )
    assert merged.environments == ["ci", "pre", "prod"]
    assert merged.tests == ["prod"]
    assert merged.scan_tools == {"ruff": ["pre", "prod"], "bandit": ["prod"]}
    assert merged.max_findings == {
        "ruff": (2, ["pre", "prod"]),
        "bandit-high": (0, ["ci"]),
        "bandit-medium": (3, ["prod"]),
    }
    assert merged.sonarqube == ["prod"]
    assert gates("web", prod=EnvironmentGates(require_sonarqube=["shop"])).sonarqube == []
    assert gates("web", pre=EnvironmentGates(require_sonarqube=True)).sonarqube == ["pre"]


def test_a_spec_without_tests_is_refused_where_tests_are_required_and_passes_where_not() -> None:
    (problem,) = unit_test_problems(None, gates())
    assert problem.startswith(
        "test is not set, but the shipline-environment block 'ci' requires unit tests (require_tests)"
    )
    lifted = EnvironmentGates(require_tests=False)
    assert unit_test_problems(None, gates(ci=lifted, pre=lifted)) == []
    (problem,) = unit_test_problems(None, gates(ci=lifted, pre=EnvironmentGates(), prod=EnvironmentGates()))
    assert "the shipline-environment blocks 'pre', 'prod' require unit tests (require_tests)" in problem
    assert unit_test_problems(TESTS, gates()) == []


def test_a_report_with_no_test_case_that_ran_is_refused_where_tests_are_required() -> None:
    assert no_test_case_ran(TESTS, gates()) == (
        "test.command ran no test case (reports/junit.xml holds none that ran), but the "
        "shipline-environment block 'ci' requires unit tests (require_tests)"
    )
    assert no_test_case_ran(TESTS, gates(ci=EnvironmentGates(require_tests=False))) is None


def test_tools_left_out_are_refused_naming_the_field_the_tool_and_the_block() -> None:
    both = gates(pre=EnvironmentGates(required_scan_tools=["ruff", "bandit"]))
    rule = "which the shipline-environment block 'pre' requires (required_scan_tools)"
    assert scan_problems(ScanSpec(tools=[]), both) == [
        f"scan.tools leaves out ruff, {rule}",
        f"scan.tools leaves out bandit, {rule}",
    ]
    assert scan_problems(ScanSpec(tools=["ruff"]), both) == [f"scan.tools leaves out bandit, {rule}"]
    assert scan_problems(ScanSpec(tools=["bandit", "ruff"]), both) == []
    assert scan_problems(ScanSpec(tools=[]), gates()) == []  # no block requires a tool


def test_sonarqube_required_for_the_app_needs_its_project_key() -> None:
    required = gates("shop", prod=EnvironmentGates(require_sonarqube=["shop"]))
    assert scan_problems(ScanSpec(), required) == [
        "scan.sonar_project_key is not set, but the shipline-environment block 'prod' requires SonarQube "
        "for shop (require_sonarqube)"
    ]
    assert scan_problems(ScanSpec(sonar_project_key="shop"), required) == []
    assert scan_problems(ScanSpec(), gates("web", prod=EnvironmentGates(require_sonarqube=["shop"]))) == []


def test_a_stricter_limit_is_kept_a_looser_or_missing_one_is_held_to_the_blocks() -> None:
    merged = gates(ci=EnvironmentGates(max_findings={"ruff": 3, "bandit-high": 0, "bandit-medium": 2}))
    spec = ScanSpec(max_findings={"ruff": 1, "bandit-high": 4, "bandit-low": 9})
    assert finding_limits(spec, merged) == {
        "ruff": FindingLimit(allowed=1, set_by="scan.max_findings"),
        "bandit-high": FindingLimit(allowed=0, set_by="max_findings of the shipline-environment block 'ci'"),
        "bandit-medium": FindingLimit(
            allowed=2, set_by="max_findings of the shipline-environment block 'ci'"
        ),
        "bandit-low": FindingLimit(allowed=9, set_by="scan.max_findings"),
    }
    assert held_limits(spec, merged) == [
        "scan.max_findings.bandit-high allows 4, more than the 0 the shipline-environment block 'ci' allows "
        "(max_findings); held to 0",
        "scan.max_findings leaves out bandit-medium, which the shipline-environment block 'ci' limits to 2 "
        "(max_findings); held to 2",
    ]
    # `max_findings: {}` no longer lets everything through, for the tools the spec runs…
    assert {k: v.allowed for k, v in finding_limits(ScanSpec(max_findings={}), merged).items()} == {
        "ruff": 3,
        "bandit-high": 0,
        "bandit-medium": 2,
    }
    # …and a tool it does not run has no limit to hold (required_scan_tools decides whether it must run).
    assert finding_limits(ScanSpec(tools=["ruff"], max_findings={}), merged).keys() == {"ruff"}
    assert held_limits(ScanSpec(tools=[], max_findings={}), merged) == []


def test_the_local_scan_fails_on_the_blocks_limit_where_the_spec_allowed_more(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("import os\n")  # one ruff finding (F401)
    spec = ScanSpec(tools=["ruff"], paths=["app"], max_findings={"ruff": 5})
    assert run_local_scan(tmp_path, spec).passed  # the spec's own limit
    limits = finding_limits(spec, gates(ci=EnvironmentGates(max_findings={"ruff": 0})))
    report = run_local_scan(tmp_path, spec, limits={k: v.allowed for k, v in limits.items()})
    assert report.exceeded == {"ruff": (1, 0)}


def test_block_fields_are_validated_where_the_operator_saves_them() -> None:
    with pytest.raises(ValidationError, match=r"unknown scan tool\(s\) \['lint'\]"):
        ShiplineEnvironment(work_pool="ci", required_scan_tools=["lint"])
    with pytest.raises(ValidationError, match=r"unknown gate key\(s\) \['bandit_high'\]"):
        ShiplineEnvironment(work_pool="ci", max_findings={"bandit_high": 0})
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        ShiplineEnvironment(work_pool="ci", max_findings={"ruff": -1})
    with pytest.raises(ValidationError, match="not an app name"):
        ShiplineEnvironment(work_pool="ci", require_sonarqube=["Shop Front"])
    block = ShiplineEnvironment(work_pool="ci", require_sonarqube=["shop"], required_scan_tools=["bandit"])
    assert block.gates().requires_sonarqube("shop") and not block.gates().requires_sonarqube("web")
    assert block.gates().required_scan_tools == ["bandit"]


def test_check_lists_what_the_gates_refuse_and_notes_what_they_hold(tmp_path: Path) -> None:
    repo = tmp_path / "app"
    repo.mkdir()
    (repo / "shipline.yaml").write_text(
        "app: shop\nbuild: {command: 'true', artifact: out}\n"
        "scan: {tools: [ruff], max_findings: {ruff: 7}}\n"
        "image: {os: {name: debian, version: bookworm}, middleware: {name: python3, version: '3.11'}, "
        "command: [x]}\n"
    )
    assert check_repository(repo).ok  # without the blocks: nothing of theirs is checked
    strict = EnvironmentGates(required_scan_tools=["ruff", "bandit"], max_findings={"ruff": 0})
    result = check_repository(repo, {"ci": EnvironmentGates(), "prod": strict})
    assert result.gates == ["ci", "prod"]
    assert result.problems == [
        "shipline.yaml test is not set, but the shipline-environment blocks 'ci', 'prod' require unit tests "
        "(require_tests): give the spec a test section (command, junit)",
        "shipline.yaml scan.tools leaves out bandit, which the shipline-environment block 'prod' requires "
        "(required_scan_tools)",
    ]
    assert result.notes == [
        "shipline.yaml scan.max_findings.ruff allows 7, more than the 0 the shipline-environment block "
        "'prod' allows (max_findings); held to 0"
    ]


def test_check_says_when_it_cannot_read_the_blocks_and_checks_the_rest(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    nothing_there = {**os.environ, "SHIPLINE_HOME": str(tmp_path), "SHIPLINE_PREFECT_PORT": str(port)}
    done = shipline(
        "check", str(PROJECT_ROOT / "examples" / "hello-python"), "--env", "prod", env=nothing_there
    )
    assert done.returncode == 0 and done.stdout.startswith("ok: hello-python"), done.stderr
    assert (
        "note: the operators' gates (shipline-environment blocks ci, prod) were not checked: Prefect at "
        f"http://127.0.0.1:{port}/api does not answer: ConnectError; the delivery's unit-test and scan "
        "stages check them"
    ) in done.stderr
    report = json.loads(
        shipline("check", str(PROJECT_ROOT / "examples" / "hello-python"), "--json", env=nothing_there).stdout
    )
    assert report["ok"] is True and report["gates"] == []
    assert any("were not checked" in note for note in report["notes"])
