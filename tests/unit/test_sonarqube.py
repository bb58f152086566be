"""The quality gate, through python-sonarqube-api, against a local server speaking SonarQube's API."""

import base64
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr
from sonarqube import SonarQubeClient

from shipline.build.sonarqube import run_scanner, wait_for_gate
from shipline.errors import ScanError

TOKEN = "squ_test_token"


class FakeSonarQube(BaseHTTPRequestHandler):
    """api/ce/activity and api/measures/component, as SonarQube answers them."""

    task_statuses: ClassVar[list[str]] = []
    gate: ClassVar[dict[str, Any]] = {}
    requests: ClassVar[list[str]] = []

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        type(self).requests.append(url.path)
        expected = "Basic " + base64.b64encode(f"{TOKEN}:".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self._reply(401, {"errors": [{"msg": "Authentication required"}]})
        elif query.get("component") != "shop":
            self._reply(404, {"errors": [{"msg": f"Component key '{query.get('component')}' not found"}]})
        elif url.path == "/api/ce/activity":
            status = self.task_statuses.pop(0) if len(self.task_statuses) > 1 else self.task_statuses[0]
            self._reply(
                200, {"tasks": [{"id": "AX-older", "status": "SUCCESS"}, {"id": "AX-task", "status": status}]}
            )
        elif url.path == "/api/measures/component":
            measures = [
                {"metric": "alert_status", "value": self.gate["status"]},
                {"metric": "quality_gate_details", "value": json.dumps(self.gate["details"])},
            ]
            self._reply(200, {"component": {"key": "shop", "measures": measures}})
        else:
            self._reply(404, {"errors": [{"msg": "Unknown url"}]})

    def log_message(self, *args: object) -> None:
        """Keep the test output free of request logs."""


@pytest.fixture
def sonar() -> Iterator[str]:
    FakeSonarQube.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeSonarQube)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


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


SCANNER = """
import os, pathlib, sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("-D"))
assert os.environ["SONAR_TOKEN"] == "squ_test_token", "token not passed"
work = pathlib.Path(".scannerwork"); work.mkdir(exist_ok=True)
(work / "report-task.txt").write_text(
    f"projectKey={args['sonar.projectKey']}\\nserverUrl={args['sonar.host.url']}\\nceTaskId=AX-task\\n"
    f"dashboardUrl={args['sonar.host.url']}/dashboard?id={args['sonar.projectKey']}\\n")
"""


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
