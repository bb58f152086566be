"""GitLab webhooks on the running ``shipline web``: answer latency under steady load, redeliveries, and
the time from a push to its first stage running.

The load is paced (RATE requests a second from CONNECTIONS client threads, on schedule whether or not
the server keeps up) and mixes what a busy GitLab sends: redeliveries of one push (the first of which asks
Prefect) and pushes to branches that are not the app's. It runs twice for 30 s: on kept-alive connections,
then with a new connection per request (as GitLab's senders mostly do). The ``ci`` pool is paused
meanwhile, so the one run the load creates never starts; it is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolUpdate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from pydantic import SecretStr

from blocks.gitlab import ShiplineGitLab
from shipline.apps import OnboardedApp, remove_app, save_app
from shipline.build.sources import resolve_source
from shipline.config import PROJECT_ROOT, Settings
from shipline.etcd_client import connect

RATE, SECONDS, NEW_CONNECTION_SECONDS, CONNECTIONS = 200, 30, 30, 8
SECRET = "bench-webhook-secret"  # noqa: S105 - the bench saves it in the block itself, then puts the block back
SAMPLE = PROJECT_ROOT / "examples" / "hello-python"


def _payload(project: str, ref: str, sha: str) -> bytes:
    return json.dumps(
        {
            "object_kind": "push",
            "ref": ref,
            "before": "0" * 39 + "1",
            "after": sha,
            "checkout_sha": sha,
            "project": {"path_with_namespace": project},
        }
    ).encode()


def _headers(key: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Gitlab-Event": "Push Hook",
        "X-Gitlab-Token": SECRET,
        "Idempotency-Key": key,
        "X-Gitlab-Webhook-UUID": str(uuid.uuid4()),
    }


def _steady(
    address: tuple[str, int], bodies: list[tuple[bytes, str]], *, seconds: float, reuse: bool
) -> dict[str, Any]:
    """Open-loop load from CONNECTIONS threads, RATE requests a second in all, each request's latency kept.

    Plain ``http.client`` in threads rather than an asyncio client: on two cores an asyncio HTTP client
    at 200 requests a second spends more CPU than the server it measures, and measures itself.
    """
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    lock = threading.Lock()

    def connection() -> http.client.HTTPConnection:
        return http.client.HTTPConnection(*address, timeout=10)

    def client(offset: int) -> None:
        conn, next_at, end = connection(), time.monotonic() + offset / RATE, time.monotonic() + seconds
        index = offset
        while time.monotonic() < end:
            time.sleep(max(0.0, next_at - time.monotonic()))
            body, key = bodies[index % len(bodies)]
            started = time.monotonic()
            try:
                if not reuse:
                    conn.close()
                    conn = connection()
                conn.request("POST", "/hooks/gitlab", body=body, headers=_headers(key))
                answer = conn.getresponse()
                answer.read()
                code = str(answer.status)
            except OSError as exc:
                code = type(exc).__name__
                conn.close()
                conn = connection()
            with lock:
                latencies.append(time.monotonic() - started)
                statuses[code] = statuses.get(code, 0) + 1
            index += CONNECTIONS
            next_at += CONNECTIONS / RATE
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "requests": len(latencies),
        "p50_ms": quantiles[49] * 1000,
        "p99_ms": quantiles[98] * 1000,
        **statuses,
    }


async def _redeliveries(url: str, body: bytes, key: str, count: int) -> set[str]:
    async with httpx.AsyncClient(timeout=30.0, trust_env=False) as client:
        answers = await asyncio.gather(
            *(client.post(url, content=body, headers=_headers(key)) for _ in range(count))
        )
    return {a.json()["flow_run_id"] for a in answers}


def _runs_tagged(tag: str) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])))


def _pause_ci(paused: bool) -> None:
    with get_client(sync_client=True) as client:
        client.update_work_pool("ci", WorkPoolUpdate(is_paused=paused))


def _first_stage_started(run_id: str, timeout: float = 120) -> tuple[float, float]:
    """When the run's process and its first stage started (epoch seconds, as the worker's host saw them).

    The server records a task run's state from its events a moment after the fact, so the task run's own
    ``start_time`` is read, not the moment this poll first saw it running.
    """
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [UUID(run_id)]}))
            starts = [r.start_time for r in runs if r.start_time is not None]
            flow_start = client.read_flow_run(UUID(run_id)).start_time
            if starts and flow_start is not None:
                return flow_start.timestamp(), min(starts).timestamp()
            time.sleep(0.05)
    raise TimeoutError(f"no stage of run {run_id} ran within {timeout} s")


def _wait_final(run_id: str, timeout: float = 900) -> str:
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            state = client.read_flow_run(UUID(run_id)).state
            if state is not None and state.is_final():
                return str(state.name)
            time.sleep(1)
    return "timed out"


async def _onboard(settings: Settings, app: OnboardedApp | None, name: str) -> None:
    async with connect(settings.etcd_url) as client:
        if app is None:
            await remove_app(client, name)
        else:
            await save_app(client, app)


def run(settings: Settings) -> dict[str, float]:
    """The webhook figures; the GitLab block and onboarded app it needs are put back afterwards."""
    original = ShiplineGitLab.configured()
    ShiplineGitLab(
        url=original.url if original else "http://127.0.0.1:9", webhook_secret=SecretStr(SECRET)
    ).save("default", overwrite=True)
    name = f"benchhook-{int(time.time())}"
    project = f"bench/{name}"
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / name
        subprocess.run(["cp", "-r", str(SAMPLE), str(copy)], check=True)
        spec = copy / "shipline.yaml"
        spec.write_text(spec.read_text().replace("app: hello-python", f"app: {name}"))
        repository = resolve_source(str(copy), sources_dir=Path(scratch) / "sources")
        sha = subprocess.run(
            ["git", "--git-dir", repository, "rev-parse", "main"], capture_output=True, text=True, check=True
        ).stdout.strip()
        asyncio.run(_onboard(settings, OnboardedApp(app=name, repository=repository, project=project), name))
        try:
            time.sleep(1.1)  # the web service reads the block at most once a second
            _pause_ci(True)
            try:
                mix = [(_payload(project, "refs/heads/main", sha), "bench-push")] + [
                    (_payload(project, f"refs/heads/topic-{i}", sha), f"bench-topic-{i}") for i in range(3)
                ]
                for label, seconds, reuse in (
                    ("keepalive", SECONDS, True),
                    ("newconn", NEW_CONNECTION_SECONDS, False),
                ):
                    result = _steady((settings.host, settings.web_port), mix, seconds=seconds, reuse=reuse)
                    for key, value in result.items():
                        figures[f"{label}_{key}"] = float(value)
                ids = asyncio.run(
                    _redeliveries(
                        settings.webhook_url, _payload(project, "refs/heads/main", sha), "bench-50", 50
                    )
                )
                figures["redeliveries_50_distinct_runs"] = float(len(ids))
                with get_client(sync_client=True) as client:
                    for stale in _runs_tagged(f"project:{project}"):
                        client.delete_flow_run(stale.id)
            finally:
                _pause_ci(False)
            # Push -> first stage running: a new commit, its push answered, its first task running.
            (copy / "app" / "NOTES").write_text("bench\n")
            resolve_source(str(copy), sources_dir=Path(scratch) / "sources")
            new_sha = subprocess.run(
                ["git", "--git-dir", repository, "rev-parse", "main"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            pushed = time.time()
            answer = httpx.post(
                settings.webhook_url,
                content=_payload(project, "refs/heads/main", new_sha),
                headers=_headers("bench-latency"),
                timeout=10,
            )
            figures["push_answered_seconds"] = time.time() - pushed
            run_id = answer.json()["flow_run_id"]
            flow_started, stage_started = _first_stage_started(run_id)
            figures["push_to_flow_run_process_seconds"] = flow_started - pushed
            figures["push_to_first_stage_running_seconds"] = stage_started - pushed
            figures["push_delivery_completed"] = float(_wait_final(run_id) == "Completed")
        finally:
            asyncio.run(_onboard(settings, None, name))
            if original is not None:
                original.save("default", overwrite=True)
            else:
                with get_client(sync_client=True) as client:
                    document = client.read_block_document_by_name(
                        "default", "shipline-gitlab", include_secrets=False
                    )
                    client.delete_block_document(document.id)
    return figures
