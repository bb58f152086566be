"""The quality gate, through python-sonarqube-api, against a local server speaking SonarQube's API."""

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sonarqube import SonarQubeClient

from shipline.build.sonarqube import run_scanner, wait_for_gate
from shipline.errors import ScanError
from tests.fake_sonarqube import SCANNER, TOKEN, FakeSonarQube, serve_fake_sonarqube


@pytest.fixture
def sonar() -> Iterator[str]:
    yield from serve_fake_sonarqube()


def failing_gate() -> dict[str, Any]:
    condition = {"metric": "new_coverage", "op": "LT", "error": "80", "actual": "41.5", "level": "ERROR"}
    return {"status": "ERROR", "details": {"level": "ERROR", "conditions": [condition]}}


def test_waits_for_the_task_then_reads_a_passed_gate(sonar: str) -> None:
    FakeSonarQube.task_statuses = ["PENDING", "IN_PROGRESS", "SUCCESS"]
    FakeSonarQube.gate = {"status": "OK", "details": {"level": "OK", "conditions": []}}
    client = SonarQubeClient(sonarqube_url=sonar, token=TOKEN)
    gate = wait_for_gate(client, project_key="shop", task_id="AX-task", sleep=lambda _: None)
    assert gate.passed and gate.status == "OK"
    assert FakeSonarQube.requests.count("/api/ce/activity") == 3
    assert FakeSonarQube.requests[-1] == "/api/measures/component"


def test_failed_gate_lists_its_conditions(sonar: str) -> None:
    FakeSonarQube.task_statuses = ["SUCCESS"]
    FakeSonarQube.gate = failing_gate()
    gate = wait_for_gate(
        SonarQubeClient(sonarqube_url=sonar, token=TOKEN), project_key="shop", task_id="AX-task"
    )
    assert not gate.passed
    assert [(c.metric, c.status, c.actual, c.threshold) for c in gate.conditions] == [
        ("new_coverage", "ERROR", "41.5", "80")
    ]


def test_failed_background_task_is_an_error(sonar: str) -> None:
    FakeSonarQube.task_statuses = ["FAILED"]
    with pytest.raises(ScanError, match="task AX-task of shop ended FAILED"):
        wait_for_gate(
            SonarQubeClient(sonarqube_url=sonar, token=TOKEN), project_key="shop", task_id="AX-task"
        )


def test_wrong_token_is_a_permanent_error(sonar: str) -> None:
    FakeSonarQube.task_statuses = ["SUCCESS"]
    with pytest.raises(ScanError, match="refused the token") as caught:
        wait_for_gate(
            SonarQubeClient(sonarqube_url=sonar, token="wrong"), project_key="shop", task_id="AX-task"
        )
    assert not caught.value.transient


def test_unknown_project_is_named(sonar: str) -> None:
    with pytest.raises(ScanError, match="no project 'nope'"):
        wait_for_gate(
            SonarQubeClient(sonarqube_url=sonar, token=TOKEN), project_key="nope", task_id="AX-task"
        )


def test_task_never_processed_times_out(sonar: str) -> None:
    FakeSonarQube.task_statuses = ["PENDING"]
    with pytest.raises(ScanError, match="did not process task AX-task") as caught:
        client = SonarQubeClient(sonarqube_url=sonar, token=TOKEN)
        wait_for_gate(client, project_key="shop", task_id="AX-task", timeout=0.2, poll_seconds=0.05)
    assert caught.value.transient


def test_scanner_receives_properties_and_token_and_its_report_is_read(tmp_path: Path) -> None:
    (tmp_path / "scanner.py").write_text(SCANNER)
    report = run_scanner(
        [sys.executable, str(tmp_path / "scanner.py")],
        workspace=tmp_path,
        url="http://127.0.0.1:9",
        token=SecretStr(TOKEN),
        project_key="shop",
    )
    assert report["ceTaskId"] == "AX-task"
    assert report["dashboardUrl"] == "http://127.0.0.1:9/dashboard?id=shop"


def test_scanner_failure_and_absence_are_errors(tmp_path: Path) -> None:
    failing = [sys.executable, "-c", "import sys; print('ERROR: no sources', file=sys.stderr); sys.exit(2)"]
    with pytest.raises(ScanError, match=r"scanner failed \(2\): ERROR: no sources"):
        run_scanner(failing, workspace=tmp_path, url="http://x", token=SecretStr(TOKEN), project_key="shop")
    with pytest.raises(ScanError, match="'no-such-scanner' is not installed"):
        run_scanner(
            ["no-such-scanner"],
            workspace=tmp_path,
            url="http://x",
            token=SecretStr(TOKEN),
            project_key="shop",
        )
    with pytest.raises(ScanError, match=r"left no \.scannerwork/report-task\.txt"):
        silent = [sys.executable, "-c", "pass"]
        run_scanner(silent, workspace=tmp_path, url="http://x", token=SecretStr(TOKEN), project_key="shop")
