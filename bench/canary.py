"""Releases under load through the stack's nginx: what an unverified release answers, and canaries.

Each case is a real release flow run on the stack's pre worker, of a busybox image whose CGI program
answers its version (or a 500 for one request in five), while two clients send 60 req/s each through nginx:
one with a new connection per request (a raw socket, as curl does), one on a kept-alive connection.

- **unverified**: v2 is healthy at once but its auto-tests run 3 s and fail: the requests v2 answered (0 is
  the goal) out of all requests sent during the release;
- **canary abort**: v2 fails one request in five, canary at 50 % for 6 s: the decision, both error rates,
  how long after the window closed the analysis decided (from the run's artifact), the whole release's
  time, and every answer the clients got that was neither v1, v2 nor the canary's own 500 (goal 0);
- **canary promote**: a good v2, same settings: failed requests (goal 0) and the decision time.

The apps are retired afterwards.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

from shipline.config import Settings
from shipline.docker import docker_client
from shipline.release.retire import retire
from shipline.spec import AutoTests, CanarySpec, HttpCheck
from tests.e2e.test_canary import PATH, canary_request, serving
from tests.e2e.test_release_flow import deliver
from tests.e2e.test_verified_traffic import Load

LIMITS = CanarySpec(weight=50, seconds=6, max_error_rate=0.01, max_p99_ms=1000, min_requests=20)


def _analysis(run_id: object, app: str) -> list[dict[str, Any]]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[f"canary-{app}-pre"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
            )
        )
    data = found[0].data
    table: list[dict[str, Any]] = json.loads(data) if isinstance(data, str) else data  # type: ignore[assignment]
    return table


def _total(load: Load) -> Counter[str]:
    total: Counter[str] = Counter()
    for answers in load.answers.values():
        total.update(answers)
    return total


def _live_v1(settings: Settings, app: str) -> None:
    first = deliver(canary_request(settings, app, "v1", None))
    assert first.state is not None and first.state.is_completed(), first.state
    deadline = time.monotonic() + 10
    while serving(settings, app) != {"200 v1"}:
        assert time.monotonic() < deadline, "v1 never served through nginx"
        time.sleep(0.05)


def _unverified(settings: Settings, app: str) -> dict[str, Any]:
    _live_v1(settings, app)
    unverified = canary_request(settings, app, "v2", None).model_copy(
        update={
            "auto_tests": AutoTests(
                http=[HttpCheck(path="/version.txt", contains="v2")], command=["sh", "-c", "sleep 3; exit 1"]
            )
        }
    )
    with Load(settings.nginx_port, PATH, f"{app}.pre.localhost") as load:
        run = deliver(unverified)
    assert run.state is not None and run.state.is_failed(), run.state
    total = _total(load)
    return {
        "unverified_requests_sent": sum(total.values()),
        "unverified_answered_by_unverified": sum(n for answer, n in total.items() if "v2" in answer),
        "unverified_failed": sum(n for answer, n in total.items() if answer != "200 v1"),
    }


def _canary(settings: Settings, app: str, *, fail_one_in: int) -> dict[str, Any]:
    _live_v1(settings, app)
    with Load(settings.nginx_port, PATH, f"{app}.pre.localhost") as load:
        started = time.monotonic()
        run = deliver(canary_request(settings, app, "v2", LIMITS, fail_one_in=fail_one_in))
        ended = time.monotonic()
        time.sleep(1)  # the load goes on after the release: only v1 (abort) or v2 (promote) answers
    assert run.state is not None
    table = _analysis(run.id, app)
    canary, baseline = table
    total = _total(load)
    name = "canary_abort" if fail_one_in else "canary_promote"
    return {
        f"{name}_decision": str(canary["decision"]),
        f"{name}_canary_error_rate": str(canary["error rate"]),
        f"{name}_baseline_error_rate": str(baseline["error rate"]),
        f"{name}_canary_requests": int(canary["requests"]),
        f"{name}_decided_ms_after_window": float(canary["decided ms after the window"]),
        f"{name}_release_seconds": ended - started,
        f"{name}_requests_sent": sum(total.values()),
        f"{name}_failed_but_canary_5xx": sum(
            n for answer, n in total.items() if answer not in {"200 v1", "200 v2", "500 v2 failed"}
        ),
        f"{name}_served_at_end": ", ".join(sorted(serving(settings, app))),
    }


def run(settings: Settings) -> dict[str, Any]:
    """Run the three cases; every app is retired afterwards."""
    stamp = int(time.time())
    figures: dict[str, Any] = {}
    cases: list[tuple[str, Callable[[Settings, str], dict[str, Any]]]] = [
        (f"bench-unverified-{stamp}", _unverified),
        (f"bench-canary-abort-{stamp}", partial(_canary, fail_one_in=5)),
        (f"bench-canary-promote-{stamp}", partial(_canary, fail_one_in=0)),
    ]
    docker = docker_client(settings.docker_url)
    for app, case in cases:
        try:
            figures |= case(settings, app)
        finally:
            retire(app, "pre", etcd_url=settings.etcd_url, client=docker, grace_seconds=2)
    return figures
