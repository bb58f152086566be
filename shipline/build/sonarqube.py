"""SonarQube analysis: run the scanner, wait for the server's background task, read the quality gate.

The scanner leaves ``.scannerwork/report-task.txt`` (``projectKey``, ``ceTaskId``, ``dashboardUrl`` …);
the task's progress comes from ``api/ce/activity`` and the gate from ``api/measures/component``
(``alert_status``, ``quality_gate_details``), both through python-sonarqube-api.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from requests import RequestException
from sonarqube import SonarQubeClient
from sonarqube.utils.exceptions import AuthError, ClientError, NotFoundError, ServerError

from shipline.errors import ScanError

PENDING = {"PENDING", "IN_PROGRESS"}


class GateCondition(BaseModel):
    """One condition of a quality gate."""

    metric: str
    status: str
    actual: str | None = None
    threshold: str | None = None
    comparator: str | None = None


class QualityGate(BaseModel):
    """A finished analysis and its quality gate."""

    project_key: str
    task_id: str
    status: str
    """OK, WARN, ERROR or NONE (no gate)."""
    conditions: list[GateCondition]
    dashboard_url: str | None = None

    @property
    def passed(self) -> bool:
        return self.status in {"OK", "WARN", "NONE"}


def read_report_task(workspace: Path) -> dict[str, str]:
    """The scanner's ``report-task.txt``.

    Raises:
        ScanError: if the scanner left no report.
    """
    path = workspace / ".scannerwork" / "report-task.txt"
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ScanError(
            f"the scanner left no {path.relative_to(workspace)}", hint="read the scanner's output"
        ) from exc
    entries = dict(line.split("=", 1) for line in lines if "=" in line)
    if "ceTaskId" not in entries:
        raise ScanError(f"{path.name} names no ceTaskId", hint="check the scanner version")
    return entries


def run_scanner(
    command: list[str],
    *,
    workspace: Path,
    url: str,
    token: SecretStr,
    project_key: str,
    timeout: float = 1800,
) -> dict[str, str]:
    """Run the scanner CLI on ``workspace`` and return its report-task entries.

    Raises:
        ScanError: if the scanner cannot run, fails, or leaves no report.
    """
    args = [*command, f"-Dsonar.host.url={url}", f"-Dsonar.projectKey={project_key}", "-Dsonar.sources=."]
    env = {**os.environ, "SONAR_TOKEN": token.get_secret_value()}
    try:
        done = subprocess.run(
            args, cwd=workspace, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise ScanError(
            f"scanner {command[0]!r} is not installed",
            hint="set scanner_command in the shipline-sonarqube block",
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise ScanError(f"the scanner ran longer than {timeout:.0f}s", transient=True) from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ScanError(f"the scanner failed ({done.returncode}): {tail[0]}", transient=True)
    return read_report_task(workspace)


def _measures(payload: dict[str, Any]) -> dict[str, str]:
    return {m["metric"]: m.get("value", "") for m in payload.get("component", {}).get("measures", [])}


def wait_for_gate(
    client: SonarQubeClient,
    *,
    project_key: str,
    task_id: str,
    dashboard_url: str | None = None,
    timeout: float = 600,
    poll_seconds: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> QualityGate:
    """Wait until the server has processed analysis ``task_id``, then read the project's quality gate.

    Raises:
        ScanError: if the background task fails, the server refuses the token, or time runs out.
    """
    deadline = time.monotonic() + timeout
    try:
        while True:
            tasks = client.ce.search_tasks(component=project_key).get("tasks", [])
            status = next((t.get("status") for t in tasks if t.get("id") == task_id), "PENDING")
            if status == "SUCCESS":
                break
            if status not in PENDING:
                raise ScanError(
                    f"SonarQube task {task_id} of {project_key} ended {status}", hint=dashboard_url
                )
            if time.monotonic() > deadline:
                raise ScanError(
                    f"SonarQube did not process task {task_id} within {timeout:.0f}s", transient=True
                )
            sleep(poll_seconds)
        measures = _measures(
            client.measures.get_component_with_specified_measures(
                component=project_key, metricKeys="alert_status,quality_gate_details"
            )
        )
    except AuthError as exc:
        raise ScanError(
            "SonarQube refused the token", hint="check the shipline-sonarqube block's token"
        ) from exc
    except NotFoundError as exc:
        raise ScanError(
            f"SonarQube has no project {project_key!r}", hint="check scan.sonar_project_key"
        ) from exc
    except (ServerError, ClientError, RequestException) as exc:
        raise ScanError(f"SonarQube did not answer: {exc}", transient=True) from exc
    details = json.loads(measures.get("quality_gate_details") or "{}")
    conditions = [
        GateCondition(
            metric=c.get("metric", "?"),
            status=c.get("level", "?"),
            actual=c.get("actual"),
            threshold=c.get("error"),
            comparator=c.get("op"),
        )
        for c in details.get("conditions", [])
    ]
    return QualityGate(
        project_key=project_key,
        task_id=task_id,
        status=measures.get("alert_status") or "NONE",
        conditions=conditions,
        dashboard_url=dashboard_url,
    )
