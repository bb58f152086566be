"""Gates the operator owns, on the stack's Prefect server: the unit-test and scan stages run in this test's
process (as the ci worker runs them) under environment blocks saved by the test, and refuse a spec that
asks for less than the blocks, naming the spec field, the rule and the block field."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from blocks.environment import ShiplineEnvironment
from blocks.sonarqube import ShiplineSonarQube
from shipline.build.check import read_environment_gates
from shipline.build.registry import PushedImage
from shipline.config import Settings
from shipline.docker import docker_client
from shipline.errors import ConfigError, ScanError, ServiceUnavailableError, TestFailure
from shipline.spec import AppSpec
from tasks.scan import scan_source
from tasks.unit_test import run_unit_tests
from tests.cli import shipline
from tests.fake_sonarqube import SCANNER, TOKEN, FakeSonarQube, serve_fake_sonarqube
from tests.images import busybox_web_image


@pytest.fixture
def strict_env(app: str) -> Iterator[str]:
    """An environment of this test only whose block requires ruff and bandit, at most 0 ruff findings and
    SonarQube for ``sonar-{app}``; deleted afterwards."""
    name = f"gates-{app}"
    ShiplineEnvironment(
        work_pool=name,
        required_scan_tools=["ruff", "bandit"],
        max_findings={"ruff": 0, "bandit-high": 0},
        require_sonarqube=[f"sonar-{app}"],
    ).save(name, overwrite=True)
    yield name
    with contextlib.suppress(ValueError):
        ShiplineEnvironment.delete(name)


def spec_of(app: str, scan: dict[str, object], test: dict[str, str] | None = None) -> AppSpec:
    return AppSpec.model_validate(
        {
            "app": app,
            "build": {"command": "true", "artifact": "app"},
            "test": test,
            "scan": {"paths": ["app"], **scan},
            "image": {
                "os": {"name": "busybox", "version": "1"},
                "middleware": {"name": "host-jre", "version": "1"},
                "command": ["sh"],
            },
        }
    )


def workspace_with(tmp_path: Path, code: str) -> Path:
    (tmp_path / "app").mkdir(parents=True)
    (tmp_path / "app" / "main.py").write_text(code)
    return tmp_path


def test_tools_left_out_fail_the_scan_naming_the_rule_and_the_block(
    settings: Settings, app: str, strict_env: str, tmp_path: Path
) -> None:
    workspace = workspace_with(tmp_path, "VALUE = 1\n")
    with pytest.raises(ScanError) as caught:
        scan_source(spec_of(app, {"tools": [], "max_findings": {}}), workspace, [strict_env])
    assert caught.value.message == (
        f"{app}: scan.tools leaves out ruff, which the shipline-environment block {strict_env!r} requires "
        f"(required_scan_tools); scan.tools leaves out bandit, which the shipline-environment block "
        f"{strict_env!r} requires (required_scan_tools)"
    )
    # The same spec released to pre and prod only meets their default gates, and passes.
    assert (
        scan_source(spec_of(app, {"tools": [], "max_findings": {}}), workspace, ["pre", "prod"]) == "passed"
    )
    # Both tools listed, clean code: the strict block passes it.
    assert scan_source(spec_of(app, {"tools": ["ruff", "bandit"]}), workspace, [strict_env]) == "passed"


def test_a_looser_limit_is_held_to_the_blocks_and_the_failure_says_where_it_is_set(
    settings: Settings, app: str, strict_env: str, tmp_path: Path
) -> None:
    workspace = workspace_with(tmp_path, "import os\n")  # one ruff finding
    loose = spec_of(app, {"tools": ["ruff", "bandit"], "max_findings": {"ruff": 5}})
    assert scan_source(loose, workspace, ["pre"]) == "passed"  # the spec's own 5 where no block says less
    with pytest.raises(ScanError) as caught:
        scan_source(loose, workspace, [strict_env])
    assert caught.value.message == (
        f"{app}: scan gate failed: ruff 1 > 0 (max_findings of the shipline-environment block {strict_env!r})"
    )


def test_sonarqube_required_needs_a_project_key_and_a_server(
    settings: Settings, app: str, strict_env: str, tmp_path: Path
) -> None:
    workspace = workspace_with(tmp_path, "VALUE = 1\n")
    named = f"sonar-{app}"
    with pytest.raises(
        ScanError, match=r"scan.sonar_project_key is not set, but the shipline-environment block"
    ):
        scan_source(spec_of(named, {"tools": ["ruff", "bandit"]}), workspace, [strict_env])
    keyed = spec_of(named, {"tools": ["ruff", "bandit"], "sonar_project_key": named})
    with pytest.raises(
        ScanError, match=rf"requires SonarQube for {named} \(require_sonarqube\), but no shipline-sonarqube"
    ):
        scan_source(keyed, workspace, [strict_env])
    # Another app under the same block is not named by it.
    assert scan_source(spec_of(app, {"tools": ["ruff", "bandit"]}), workspace, [strict_env]) == "passed"


@pytest.fixture
def middleware(settings: Settings, app: str) -> PushedImage:
    """A tiny image standing in for the middleware layer: the host's busybox (sh, printf)."""
    repository = f"{settings.registry_address}/apps/{app}-middleware"
    digest = busybox_web_image(docker_client(settings.docker_url), repository, "v1", {})
    return PushedImage(repository=repository, tag="v1", digest=digest)


def test_the_ci_blocks_default_requires_tests_that_ran(
    settings: Settings, app: str, middleware: PushedImage, tmp_path: Path
) -> None:
    no_tests = spec_of(app, {"tools": []})
    with pytest.raises(TestFailure) as caught:
        run_unit_tests(no_tests, tmp_path, middleware, "a" * 40, ["pre"])
    assert caught.value.message.startswith(
        f"{app}: test is not set, but the shipline-environment blocks 'ci', 'pre' require unit tests "
        "(require_tests)"
    )
    empty = spec_of(app, {}, {"command": "printf '<testsuite/>' > junit.xml", "junit": "junit.xml"})
    with pytest.raises(TestFailure, match=r"test.command ran no test case \(junit.xml holds none that ran\)"):
        run_unit_tests(empty, tmp_path, middleware, "a" * 40, ["pre"])
    one = spec_of(
        app,
        {},
        {
            "command": "printf '<testsuite><testcase name=\"t\"/></testsuite>' > junit.xml",
            "junit": "junit.xml",
        },
    )
    summary = run_unit_tests(one, tmp_path, middleware, "a" * 40, ["pre"])
    assert summary is not None and summary.passed == 1


def test_check_reads_the_blocks_from_prefects_api(settings: Settings, strict_env: str) -> None:
    read = read_environment_gates(settings.prefect_api_url, [strict_env])
    assert list(read) == ["ci", strict_env]
    assert read[strict_env] == ShiplineEnvironment.for_env(strict_env).gates()
    assert read[strict_env].required_scan_tools == ["ruff", "bandit"]
    with pytest.raises(ConfigError, match="there is no shipline-environment/no-such-env block"):
        read_environment_gates(settings.prefect_api_url, ["no-such-env"])
    with pytest.raises(ServiceUnavailableError, match="does not answer"):
        read_environment_gates("http://127.0.0.1:9/api", ["pre"], timeout=1)


def test_shipline_check_and_run_refuse_it_before_any_run(
    settings: Settings, strict_env: str, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "shipline.yaml").write_text(
        "app: gates-check\nbuild: {command: 'true', artifact: out}\n"
        "test: {command: 'true', junit: junit.xml}\nscan: {tools: [ruff], max_findings: {ruff: 3}}\n"
        "image: {os: {name: busybox, version: '1'}, middleware: {name: host-jre, version: '1'}, "
        "command: [sh]}\n"
    )
    rule = f"scan.tools leaves out bandit, which the shipline-environment block {strict_env!r} requires"
    checked = shipline("check", str(repo), "--env", strict_env, "--json")
    report = json.loads(checked.stdout)
    assert checked.returncode == 1 and report["gates"] == ["ci", strict_env]
    assert report["problems"] == [f"shipline.yaml {rule} (required_scan_tools)"]
    assert report["notes"] == [
        f"shipline.yaml scan.max_findings.ruff allows 3, more than the 0 the shipline-environment block "
        f"{strict_env!r} allows (max_findings); held to 0"
    ]
    assert shipline("check", str(repo)).returncode == 0  # pre and prod's default gates let it through
    refused = shipline("run", str(repo), "--env", strict_env)
    assert refused.returncode == 1 and rule in refused.stderr, refused.stderr


@pytest.fixture
def sonar_block(tmp_path: Path) -> Iterator[None]:
    """``shipline-sonarqube/default`` pointing at a fake SonarQube whose gate passes, with a scanner script;
    deleted afterwards (no other test expects one)."""
    FakeSonarQube.task_statuses = ["SUCCESS"]
    FakeSonarQube.gate = {"status": "OK", "details": {"level": "OK", "conditions": []}}
    (tmp_path / "scanner.py").write_text(SCANNER)
    server = serve_fake_sonarqube()
    url = next(server)
    ShiplineSonarQube(
        url=url, token=SecretStr(TOKEN), scanner_command=[sys.executable, str(tmp_path / "scanner.py")]
    ).save("default", overwrite=True)
    yield
    ShiplineSonarQube.delete("default")
    next(server, None)


def test_tools_a_block_requires_run_beside_sonarqube(
    settings: Settings, app: str, strict_env: str, sonar_block: None, tmp_path: Path
) -> None:
    workspace = workspace_with(tmp_path / "repo", "import os\n")  # one ruff finding
    spec = spec_of(app, {"tools": ["ruff", "bandit"], "sonar_project_key": "shop"})
    assert scan_source(spec, workspace, ["pre"]) == "OK"  # SonarQube's gate alone decides
    with pytest.raises(ScanError) as caught:
        scan_source(spec, workspace, [strict_env])  # …and the tools this block requires run too
    assert caught.value.message == f"{app}: scan gate failed: ruff 1 > 0 (scan.max_findings)"
    assert "/api/measures/component" in FakeSonarQube.requests
