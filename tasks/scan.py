"""Task: static scan — SonarQube's quality gate when a block is configured, ruff + bandit otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from sonarqube import SonarQubeClient

from blocks.sonarqube import ShiplineSonarQube
from shipline.build.scan import run_local_scan
from shipline.build.sonarqube import run_scanner, wait_for_gate
from shipline.errors import ScanError
from shipline.gitlab.statuses import STAGE_HOOKS
from shipline.retries import retry_if_transient
from shipline.spec import AppSpec

SONAR_BLOCK = "default"


def _sonar_block() -> ShiplineSonarQube | None:
    try:
        return cast(ShiplineSonarQube, ShiplineSonarQube.load(SONAR_BLOCK))
    except ValueError:
        return None


@task(
    task_run_name="scan: {spec.app}",
    retries=1,
    retry_delay_seconds=10,
    retry_condition_fn=retry_if_transient,
    **STAGE_HOOKS,
)
def scan_source(spec: AppSpec, workspace: Path) -> str:
    """Run the scan and enforce its gate; the findings summary becomes an artifact."""
    sonar = _sonar_block()
    if sonar is not None and spec.scan.sonar_project_key:
        report = run_scanner(
            sonar.scanner_command,
            workspace=workspace,
            url=sonar.url,
            token=sonar.token,
            project_key=spec.scan.sonar_project_key,
        )
        client = SonarQubeClient(sonarqube_url=sonar.url, token=sonar.token.get_secret_value())
        gate = wait_for_gate(
            client,
            project_key=spec.scan.sonar_project_key,
            task_id=report["ceTaskId"],
            dashboard_url=report.get("dashboardUrl"),
            timeout=sonar.gate_timeout_seconds,
        )
        lines = [
            f"- {c.metric}: {c.actual} ({c.comparator} {c.threshold}) {c.status}" for c in gate.conditions
        ]
        create_markdown_artifact(
            key=f"scan-{spec.app}",
            markdown=f"### SonarQube gate: {gate.status}\n\n"
            + "\n".join(lines)
            + f"\n\n{gate.dashboard_url or ''}\n",
            description=f"SonarQube quality gate of {spec.app}: {gate.status}",
        )
        if not gate.passed:
            raise ScanError(f"{spec.app}: SonarQube quality gate {gate.status}", hint=gate.dashboard_url)
        return gate.status
    local = run_local_scan(workspace, spec.scan, log=get_run_logger().info)
    rows = "\n".join(
        f"| {f.tool} | {f.rule} | {f.severity} | {f.location} | {f.message} |" for f in local.findings[:50]
    )
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(local.counts.items())) or "no findings"
    verdict = "passed" if local.passed else "FAILED"
    create_markdown_artifact(
        key=f"scan-{spec.app}",
        markdown=f"### Local scan ({', '.join(spec.scan.tools)}): {verdict}\n\n"
        f"{counts}\n\n| tool | rule | severity | where | message |\n|---|---|---|---|---|\n{rows}\n",
        description=f"Static scan of {spec.app}: {verdict}, {counts} (first 50 findings)",
    )
    if not local.passed:
        over = ", ".join(f"{k} {found} > {allowed}" for k, (found, allowed) in local.exceeded.items())
        raise ScanError(f"{spec.app}: scan gate failed: {over}", hint="see the scan artifact of this run")
    get_run_logger().info("scan passed: %s", counts)
    return "passed"
