"""Canary releases through the release flow on the stack, under load through nginx (two clients at 60 req/s
each: a new connection per request, as curl makes them, and one keep-alive connection): a canary whose
error rate is 20 % is aborted within its window and the live release never stops serving; a good one is
promoted and serves alone at the end; an operator's `shipline abort` ends a canary at once.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
from prefect.client.schemas.objects import FlowRun

from shipline.config import Settings
from shipline.discovery.splits import read_split
from shipline.etcd_client import connect
from shipline.release.history import ReleaseStatus
from shipline.release.plan import ReleaseRequest
from shipline.spec import CanarySpec, EnvironmentSettings
from tests.cli import shipline
from tests.e2e.test_release_flow import deliver, releases, request
from tests.e2e.test_verified_traffic import RATE, Load
from tests.waiting import eventually

PATH = "/cgi-bin/answer"


HEAD = "Content-Type: text/plain\\r\\n\\r\\n"


def answer_script(version: str, *, fail_one_in: int = 0) -> str:
    """A CGI program answering ``version``, or a 500 for one request in ``fail_one_in`` at random."""
    lines = ["#!/bin/sh"]
    if fail_one_in:
        lines += [
            f"if [ $((RANDOM % {fail_one_in})) -eq 0 ]; then",
            f"  printf 'HTTP/1.0 500 Internal Server Error\\r\\n{HEAD}{version} failed\\n'",
            "  exit 0",
            "fi",
        ]
    lines.append(f"printf 'HTTP/1.0 200 OK\\r\\n{HEAD}{version}\\n'")
    return "\n".join(lines) + "\n"


def canary_request(
    settings: Settings, app: str, version: str, canary: CanarySpec | None, *, fail_one_in: int = 0
) -> ReleaseRequest:
    """A release to PRE of a busybox image answering ``version`` at PATH, with ``canary`` in PRE."""
    base = request(
        settings,
        app,
        version,
        expect=version,
        files={"cgi-bin/answer": answer_script(version, fail_one_in=fail_one_in)},
    )
    service = base.service.model_copy(update={"environments": {"pre": EnvironmentSettings(canary=canary)}})
    return base.model_copy(update={"service": service})


def canary_artifact(run: FlowRun) -> tuple[str, list[dict[str, Any]]]:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[f"canary-{run.parameters['request']['app']}-pre"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]),
            )
        )
    assert len(artifacts) == 1, f"run {run.id} published {len(artifacts)} canary artifacts"
    data = artifacts[0].data
    table: list[dict[str, Any]] = json.loads(data) if isinstance(data, str) else data  # type: ignore[assignment]
    return artifacts[0].description or "", table


def serving(settings: Settings, app: str) -> set[str]:
    """What 40 requests through nginx are answered with now."""
    url, host = f"http://127.0.0.1:{settings.nginx_port}{PATH}", f"{app}.pre.localhost"
    with httpx.Client(trust_env=False, timeout=5) as client:
        return {
            f"{r.status_code} {r.text.strip()}"
            for r in (client.get(url, headers={"Host": host}) for _ in range(40))
        }


def split_held(settings: Settings, app: str) -> bool:
    async def read() -> bool:
        async with connect(settings.etcd_url) as client:
            return await read_split(client, app, "pre") is not None

    return asyncio.run(read())


def live_v1(settings: Settings, app: str) -> None:
    first = deliver(canary_request(settings, app, "v1", None))
    assert first.state is not None and first.state.is_completed(), first.state
    eventually(lambda: serving(settings, app) == {"200 v1"}, timeout=10, what="v1 through nginx")


def test_a_canary_failing_one_request_in_five_is_aborted_and_the_live_release_serves_on(
    settings: Settings, app: str
) -> None:
    live_v1(settings, app)
    limits = CanarySpec(weight=50, seconds=6, max_error_rate=0.01, max_p99_ms=1000, min_requests=20)
    with Load(settings.nginx_port, PATH, f"{app}.pre.localhost") as load:
        run = deliver(canary_request(settings, app, "v2", limits, fail_one_in=5))
        time.sleep(1)  # the load goes on once the canary has gone

    assert run.state is not None and run.state.is_failed(), run.state
    assert "canary aborted by analysis" in str(run.state.message), run.state.message
    history = releases(settings, app)
    assert [r.status for r in history] == [ReleaseStatus.LIVE, ReleaseStatus.ROLLED_BACK]
    assert history[1].canary is not None and "max_error_rate" in history[1].canary, history[1].canary
    for name, answers in load.answers.items():
        assert set(answers) <= {"200 v1", "200 v2", "500 v2 failed"}, f"{name}: {dict(answers)}"
    # The live release answered all along; the canary took its share, and failed some of it. Counted over
    # both clients: the split is exact per hundred requests, so two clients that alternate may each stay on
    # one side.
    both = load.answers["new-connection"] + load.answers["keep-alive"]
    assert both["500 v2 failed"] > 0 and both["200 v1"] > 0.3 * sum(both.values()), dict(both)
    assert serving(settings, app) == {"200 v1"}
    assert not split_held(settings, app)
    description, table = canary_artifact(run)
    assert "aborted" in description
    canary, baseline = table
    assert (canary["side"], baseline["side"]) == ("canary", "baseline")
    assert canary["requests"] >= 20 and baseline["requests"] >= 20, table
    assert 10 <= float(canary["error rate"].rstrip("%")) <= 30, table  # one in five
    assert baseline["error rate"] == "0.00%", table
    print("\n".join(json.dumps(row) for row in table))  # the analysis, for the record


def test_a_good_canary_is_promoted_and_no_request_fails(settings: Settings, app: str) -> None:
    live_v1(settings, app)
    limits = CanarySpec(weight=50, seconds=5, max_error_rate=0.01, max_p99_ms=1000, min_requests=20)
    started = time.monotonic()
    with Load(settings.nginx_port, PATH, f"{app}.pre.localhost") as load:
        run = deliver(canary_request(settings, app, "v2", limits))
        time.sleep(1)
    seconds = time.monotonic() - started

    assert run.state is not None and run.state.is_completed(), run.state
    history = releases(settings, app)
    assert [r.status for r in history] == [ReleaseStatus.SUPERSEDED, ReleaseStatus.LIVE]
    assert history[1].canary is not None and "canary promoted by analysis" in history[1].canary
    for name, answers in load.answers.items():
        assert set(answers) <= {"200 v1", "200 v2"}, f"{name}: {dict(answers)}"  # not one failed request
        assert sum(answers.values()) >= 0.6 * RATE * seconds, f"{name}: {dict(answers)} in {seconds:.1f} s"
    assert serving(settings, app) == {"200 v2"}
    assert not split_held(settings, app)
    listed = shipline("releases", app, "--env", "pre")
    assert "canary promoted by analysis" in listed.stdout, listed.stdout
    description, table = canary_artifact(run)
    assert "promoted" in description and table[0]["5xx"] == 0, table


def test_shipline_abort_ends_a_canary_at_once(settings: Settings, app: str) -> None:
    live_v1(settings, app)
    limits = CanarySpec(weight=10, seconds=600, min_requests=0)
    outcome: list[FlowRun] = []
    runner = threading.Thread(
        target=lambda: outcome.append(deliver(canary_request(settings, app, "v2", limits)))
    )
    runner.start()
    eventually(lambda: split_held(settings, app), timeout=120, what="the canary's split in etcd")
    eventually(lambda: "200 v2" in serving(settings, app), timeout=30, what="the canary taking requests")
    aborted = shipline("abort", app, "--env", "pre")
    assert aborted.returncode == 0, aborted.stderr
    assert "aborts the canary" in aborted.stdout
    runner.join(timeout=120)

    (run,) = outcome
    assert run.state is not None and run.state.is_failed(), run.state
    assert "aborted by operator" in str(run.state.message), run.state.message
    assert serving(settings, app) == {"200 v1"}
    again = shipline("abort", app, "--env", "pre")
    assert again.returncode == 1 and f"no canary of {app} runs in pre" in again.stderr
