"""Task: static scan — SonarQube's quality gate when a block is configured, ruff + bandit otherwise —
held to the gates of the environment blocks (``shipline.build.gates``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from sonarqube import SonarQubeClient

from blocks.environment import ShiplineEnvironment
from blocks.sonarqube import ShiplineSonarQube
from shipline.build.gates import finding_limits, held_limits, scan_problems, set_in
from shipline.build.scan import run_local_scan
from shipline.build.sonarqube import run_scanner, wait_for_gate
from shipline.errors import ScanError
from shipline.gitlab.statuses import STAGE_HOOKS
from shipline.retries import retry_if_transient
from shipline.spec import AppSpec

SONAR_BLOCK = "default"
GATES_HINT = (
    "change the scan section of shipline.yaml; the operators set the gates in the shipline-environment "
    "blocks (Blocks in the Prefect UI)"
)


def _sonar_block() -> ShiplineSonarQube | None:
    try:
        return cast(ShiplineSonarQube, ShiplineSonarQube.load(SONAR_BLOCK))
    except ValueError:
        return None


def _sonar_gate(spec: AppSpec, sonar: ShiplineSonarQube, project_key: str, workspace: Path) -> str:
    """Run the scanner, wait for SonarQube's quality gate, report it as an artifact; fail if it failed."""
    report = run_scanner(
        sonar.scanner_command, workspace=workspace, url=sonar.url, token=sonar.token, project_key=project_key
    )
    client = SonarQubeClient(sonarqube_url=sonar.url, token=sonar.token.get_secret_value())
    gate = wait_for_gate(
        client,
        project_key=project_key,
        task_id=report["ceTaskId"],
        dashboard_url=report.get("dashboardUrl"),
        timeout=sonar.gate_timeout_seconds,
    )
    lines = [f"- {c.metric}: {c.actual} ({c.comparator} {c.threshold}) {c.status}" for c in gate.conditions]
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


@task(
    task_run_name="scan: {spec.app}",
    retries=1,
    retry_delay_seconds=10,
    retry_condition_fn=retry_if_transient,
    **STAGE_HOOKS,
)
def scan_source(spec: AppSpec, workspace: Path, environments: Sequence[str] = ("pre", "prod")) -> str:
    """Run the scan and enforce its gate, held to the gates of the ci block and of each environment in
    ``environments``; the findings summary becomes an artifact."""
    logger = get_run_logger()
    gates = ShiplineEnvironment.gates_for(spec.app, environments)
    if problems := scan_problems(spec.scan, gates):
        raise ScanError(f"{spec.app}: {'; '.join(problems)}", hint=GATES_HINT)
    sonar = _sonar_block()
    if gates.sonarqube and sonar is None:
        raise ScanError(
            f"{spec.app}: {set_in(gates.sonarqube, 'require')} SonarQube for {spec.app} "
            f"(require_sonarqube), but no shipline-sonarqube block {SONAR_BLOCK!r} is saved",
            hint="an operator saves one (Blocks in the Prefect UI), or lifts require_sonarqube",
        )
    analysed = sonar is not None and spec.scan.sonar_project_key is not None
    if sonar is not None and spec.scan.sonar_project_key:
        status = _sonar_gate(spec, sonar, spec.scan.sonar_project_key, workspace)
        if not gates.scan_tools:  # the tools the blocks require run beside SonarQube
            return status
    for note in held_limits(spec.scan, gates):
        logger.warning(note)
    limits = finding_limits(spec.scan, gates)
    local = run_local_scan(
        workspace, spec.scan, limits={k: v.allowed for k, v in limits.items()}, log=logger.info
    )
    rows = "\n".join(
        f"| {f.tool} | {f.rule} | {f.severity} | {f.location} | {f.message} |" for f in local.findings[:50]
    )
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(local.counts.items())) or "no findings"
    verdict = "passed" if local.passed else "FAILED"
    create_markdown_artifact(
        key=f"scan-{spec.app}-tools" if analysed else f"scan-{spec.app}",
        markdown=f"### Local scan ({', '.join(spec.scan.tools) or 'no tools'}): {verdict}\n\n"
        f"{counts}\n\n| tool | rule | severity | where | message |\n|---|---|---|---|---|\n{rows}\n",
        description=f"Static scan of {spec.app}: {verdict}, {counts} (first 50 findings)",
    )
    if not local.passed:
        over = ", ".join(
            f"{k} {found} > {allowed} ({limits[k].set_by})" for k, (found, allowed) in local.exceeded.items()
        )
        raise ScanError(f"{spec.app}: scan gate failed: {over}", hint="see the scan artifact of this run")
    logger.info("scan passed: %s", counts)
    return "passed"
