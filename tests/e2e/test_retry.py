"""Retry from the Prefect UI, as an operator uses it: a run failed, the operator fixed the cause, pressed
Retry — and the release goes live. Each test makes the same API call as the UI's Retry button (the flow
run set to Scheduled/AwaitingRetry, forced) and waits for the worker to run the attempt."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun

from shipline.config import Settings
from shipline.delivery import stage_name
from shipline.docker import docker_client
from shipline.release.deploy import running_instances
from shipline.release.history import ReleaseStatus
from shipline.spec import AutoTests, HttpCheck
from tests.cli import shipline
from tests.e2e.test_delivery import releases_of
from tests.e2e.test_release_flow import deliver, releases, request
from tests.waiting import as_the_ui


def retry_from_the_ui(settings: Settings, run_id: UUID) -> None:
    """What the UI's Retry button sends."""
    response = as_the_ui(
        f"{settings.prefect_api_url}/flow_runs/{run_id}/set_state",
        {
            "state": {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry from the UI"},
            "force": True,
        },
    )
    assert response.status_code in (200, 201), response.text
    assert response.json()["status"] == "ACCEPT", response.text


def final_attempt(run_id: UUID, attempt: int, timeout: float = 600) -> FlowRun:
    """The flow run once its ``attempt``-th run has ended."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(run_id)
            if run.run_count >= attempt and run.state is not None and run.state.is_final():
                return run
            assert time.monotonic() < deadline, f"attempt {attempt} of {run_id} did not end: {run.state}"
            time.sleep(0.5)


def task_states(run_id: UUID) -> dict[str, list[str]]:
    """Every task run of the flow run by task name: state names, oldest first."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    found: dict[str, list[str]] = {}
    for run in sorted(runs, key=lambda r: r.created or r.expected_start_time):  # type: ignore[arg-type, return-value]
        name = stage_name(run)
        found.setdefault(name, []).append(str(run.state.name) if run.state else "?")
    return found


class Environment:
    """Something the auto-tests depend on, outside the app, that an operator fixes: an HTTP endpoint on
    loopback answering 503 until ``fix()``, then 200. Auto-test commands run in a container on the host
    network, so they reach it at ``url``."""

    def __init__(self) -> None:
        self.fixed = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if outer.fixed else 503)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ready"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fix(self) -> None:
        self.fixed = True


@pytest.fixture
def environment() -> Iterator[Environment]:
    env = Environment()
    yield env
    env.server.shutdown()


def test_retrying_a_failed_release_run_deploys_a_new_release(
    settings: Settings, app: str, environment: Environment
) -> None:
    failing = request(settings, app, "v1", expect="v1").model_copy(
        update={
            "auto_tests": AutoTests(
                http=[HttpCheck(path="/version.txt", contains="v1")],
                command=["wget", "-q", "-O", "/dev/null", environment.url],  # busybox's wget
            )
        }
    )
    first = deliver(failing)
    assert first.state is not None and first.state.is_failed(), first.state
    assert [(r.number, r.status) for r in releases(settings, app)] == [(1, ReleaseStatus.ROLLED_BACK)]
    environment.fix()  # the operator fixes the environment
    retry_from_the_ui(settings, first.id)
    second = final_attempt(first.id, attempt=2)
    assert second.state is not None and second.state.is_completed(), second.state
    assert [(r.number, r.status) for r in releases(settings, app)] == [
        (1, ReleaseStatus.ROLLED_BACK),
        (2, ReleaseStatus.LIVE),
    ]
    (instance,) = running_instances(docker_client(settings.docker_url), app=app, env="pre")
    assert instance.release == 2
    assert httpx.get(f"http://127.0.0.1:{instance.port}/version.txt").text == "v1\n"


def test_retrying_a_failed_delivery_releases_again_without_rebuilding(
    settings: Settings, sample: Path, environment: Environment
) -> None:
    spec = sample / "shipline.yaml"
    probe = f"import urllib.request as u; u.urlopen('{environment.url}')"  # the app image has python3
    spec.write_text(
        spec.read_text().replace(
            "auto_tests:\n  http:", f'auto_tests:\n  command: [python3, -c, "{probe}"]\n  http:', 1
        )
    )
    done = shipline("run", str(sample), "--json", timeout=900)
    report: dict[str, Any] = json.loads(done.stdout)
    assert done.returncode == 1 and report["state"] == "Failed", report
    assert report["stages"]["release-to-pre"] == "Failed", report
    run_id = UUID(report["flow_run_id"])
    assert [r.status for r in releases_of(settings, sample.name, "pre")] == [ReleaseStatus.ROLLED_BACK]
    environment.fix()
    retry_from_the_ui(settings, run_id)
    retried = final_attempt(run_id, attempt=2)
    assert retried.state is not None and retried.state.is_completed(), retried.state
    assert [r.status for r in releases_of(settings, sample.name, "pre")] == [
        ReleaseStatus.ROLLED_BACK,
        ReleaseStatus.LIVE,
    ]
    assert [r.status for r in releases_of(settings, sample.name, "prod")] == [ReleaseStatus.LIVE]
    states = task_states(run_id)
    for stage in (
        "checkout_source",
        "compile_app",
        "run_unit_tests",
        "scan_source",
        "build_app_layer",
        "push_app_image",
    ):
        assert states[stage][-1] == "Cached", (stage, states[stage])
