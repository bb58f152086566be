"""Automated tests of a deployed release: HTTP checks and/or a command given the base URL.

The command comes from the app's repository, so it never runs on the host: it runs in a job container of
the release's own image (what it tests, with the tools the app ships), on the host network to reach the
instance, as the environment's job user (``job_uid``/``job_gid``, nobody by default) with a read-only root
filesystem and a writable ``/tmp``, no capability, no privilege gain, 512 processes and the memory and
CPUs of the environment's block (``job_memory``/``job_cpus``) at most, and killed at its
``timeout_seconds``. It gets ``BASE_URL`` and nothing of the worker's environment.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import docker
import httpx
from pydantic import BaseModel

from shipline.docker import NOBODY, CommandResult, JobResources, JobUser, run_job
from shipline.errors import ShiplineError
from shipline.spec import AutoTests, HttpCheck

Log = Callable[[str], None]


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


class CommandRunner(Protocol):
    """Runs an auto-test command against a base URL; returns its exit code and last lines."""

    def __call__(self, command: list[str], base_url: str, timeout: float) -> CommandResult: ...


def in_release_image(
    client: docker.DockerClient,
    image: str,
    log: Log,
    *,
    resources: JobResources | None = None,
    user: JobUser = NOBODY,
) -> CommandRunner:
    """Auto-test commands in containers of ``image`` (by digest), with the limits above: ``resources`` and
    ``user`` are those of the environment the release runs in."""

    def run(command: list[str], base_url: str, timeout: float) -> CommandResult:
        log(f"$ {' '.join(command)}    (in {image}, as {user}, BASE_URL={base_url})")
        return run_job(
            client,
            image=image,
            argv=command,
            log=log,
            timeout=timeout,
            resources=resources,
            user=user,
            environment={"BASE_URL": base_url},
            network_mode="host",
            working_dir="/tmp",  # noqa: S108 - the container's own tmpfs, not the host's /tmp
        )

    return run


def _command(base_url: str, tests: AutoTests, runner: CommandRunner) -> CheckResult:
    started = time.monotonic()
    name = " ".join(tests.command)
    try:
        done = runner(tests.command, base_url, tests.timeout_seconds)
    except ShiplineError as exc:
        return CheckResult(name=name, passed=False, detail=exc.message, seconds=time.monotonic() - started)
    detail = f"exit {done.code}" + (f": {done.tail[-1]}" if done.tail else "")
    return CheckResult(name=name, passed=done.code == 0, detail=detail, seconds=time.monotonic() - started)


def run_auto_tests(base_url: str, tests: AutoTests, runner: CommandRunner) -> list[CheckResult]:
    """Run every HTTP check, then the command (with ``runner``), against ``base_url``; a result per check."""
    results = [_http(base_url, check) for check in tests.http]
    if tests.command:
        results.append(_command(base_url, tests, runner))
    return results
