"""Automated tests of a deployed release: HTTP checks and/or a command given the base URL."""

from __future__ import annotations

import os
import subprocess
import time

import httpx
from pydantic import BaseModel

from shipline.spec import AutoTests, HttpCheck


class CheckResult(BaseModel):
    """One row of the auto-test table."""

    name: str
    passed: bool
    detail: str
    seconds: float


def _http(base_url: str, check: HttpCheck) -> CheckResult:
    started = time.monotonic()
    name = f"GET {check.path}"
    try:
        response = httpx.get(base_url + check.path, timeout=10.0, trust_env=False)
    except httpx.HTTPError as exc:
        return CheckResult(
            name=name, passed=False, detail=type(exc).__name__, seconds=time.monotonic() - started
        )
    problems = []
    if response.status_code != check.status:
        problems.append(f"status {response.status_code}, expected {check.status}")
    if check.contains is not None and check.contains not in response.text:
        problems.append(f"body lacks {check.contains!r}")
    detail = "; ".join(problems) or f"status {response.status_code}"
    return CheckResult(name=name, passed=not problems, detail=detail, seconds=time.monotonic() - started)


def _command(base_url: str, tests: AutoTests) -> CheckResult:
    started = time.monotonic()
    name = " ".join(tests.command)
    try:
        done = subprocess.run(
            tests.command,
            env={**os.environ, "BASE_URL": base_url},
            capture_output=True,
            text=True,
            timeout=tests.timeout_seconds,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return CheckResult(name=name, passed=False, detail=str(exc), seconds=time.monotonic() - started)
    output = (done.stdout + done.stderr).strip().splitlines()
    detail = f"exit {done.returncode}" + (f": {output[-1]}" if output else "")
    return CheckResult(
        name=name, passed=done.returncode == 0, detail=detail, seconds=time.monotonic() - started
    )


def run_auto_tests(base_url: str, tests: AutoTests) -> list[CheckResult]:
    """Run every HTTP check, then the command, against ``base_url``; one result per check."""
    results = [_http(base_url, check) for check in tests.http]
    if tests.command:
        results.append(_command(base_url, tests))
    return results
