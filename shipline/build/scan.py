"""The local static scan: ruff and bandit on the host, gated by thresholds (the spec's, held to the
blocks' by ``shipline.build.gates``)."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

from pydantic import BaseModel

from shipline.errors import ScanError
from shipline.files import inside
from shipline.programs import find_program
from shipline.spec import ScanSpec

Log = Callable[[str], None]


class Finding(BaseModel):
    tool: str
    rule: str
    severity: str
    location: str
    message: str


class ScanReport(BaseModel):
    findings: list[Finding]
    counts: dict[str, int]
    """Per gate key: ruff, bandit-high, bandit-medium, bandit-low."""
    exceeded: dict[str, tuple[int, int]]
    """Gate keys over their threshold: (found, allowed)."""

    @property
    def passed(self) -> bool:
        return not self.exceeded


def _tool(name: str) -> str:
    found = find_program(name)
    if found is None:
        raise ScanError(f"scan tool {name} is not installed", hint="make install")
    return found


def _run(command: list[str], workspace: Path, log: Log) -> str:
    log(f"$ {Path(command[0]).name} {' '.join(command[1:])}")
    try:
        done = subprocess.run(
            command, cwd=workspace, capture_output=True, text=True, timeout=900, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ScanError(f"{Path(command[0]).name} ran longer than 900s", transient=True) from exc
    if not done.stdout.strip():
        raise ScanError(f"{Path(command[0]).name} produced no report: {done.stderr.strip()[-300:]}")
    return done.stdout


def _ruff(workspace: Path, paths: list[str], log: Log) -> list[Finding]:
    out = _run(
        [_tool("ruff"), "check", "--output-format=json", "--exit-zero", "--no-cache", *paths], workspace, log
    )
    return [
        Finding(
            tool="ruff",
            rule=item.get("code") or "syntax",
            severity="medium",
            location=f"{Path(item['filename']).relative_to(workspace)}:{item['location']['row']}",
            message=item["message"],
        )
        for item in json.loads(out)
    ]


def _bandit(workspace: Path, paths: list[str], log: Log) -> list[Finding]:
    out = _run([_tool("bandit"), "-r", "-q", "-f", "json", "--exit-zero", *paths], workspace, log)
    return [
        Finding(
            tool="bandit",
            rule=item["test_id"],
            severity=item["issue_severity"].lower(),
            location=f"{item['filename'].removeprefix('./')}:{item['line_number']}",
            message=item["issue_text"],
        )
        for item in json.loads(out)["results"]
    ]


def run_local_scan(
    workspace: Path,
    spec: ScanSpec,
    log: Log = lambda line: None,
    *,
    limits: Mapping[str, int] | None = None,
) -> ScanReport:
    """Run the spec's tools on its paths (each command to ``log``); compare the counts with ``limits``
    (per gate key; by default the spec's own ``max_findings``)."""
    for path in spec.paths:
        inside(workspace, path, what="scan.paths entry")
    findings: list[Finding] = []
    if "ruff" in spec.tools:
        findings += _ruff(workspace, spec.paths, log)
    if "bandit" in spec.tools:
        findings += _bandit(workspace, spec.paths, log)
    counts = Counter("ruff" if f.tool == "ruff" else f"bandit-{f.severity}" for f in findings)
    exceeded = {
        key: (counts.get(key, 0), allowed)
        for key, allowed in (spec.max_findings if limits is None else limits).items()
        if counts.get(key, 0) > allowed
    }
    return ScanReport(findings=findings, counts=dict(counts), exceeded=exceeded)
