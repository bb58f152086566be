"""Verified before traffic: while a release's auto-tests run, and when they fail, no user request reaches
its instances — measured through nginx under load, with a new connection per request (as curl does) and
with one keep-alive connection, while its instances answer their health path."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import httpx

from shipline.config import Settings
from shipline.discovery.instances import list_instances
from shipline.docker import docker_client
from shipline.etcd_client import connect
from shipline.release.deploy import running_instances
from shipline.release.history import ReleaseStatus
from shipline.spec import AutoTests, HttpCheck
from tests.e2e.test_release_flow import deliver, releases, request
from tests.routing import fresh_get
from tests.waiting import eventually

RATE = 60
"""Requests per second of each client."""


class Load:
    """Two clients through nginx at RATE each until stopped: answers counted by (status, body)."""

    def __init__(self, port: int, path: str, host: str) -> None:
        self.port, self.path, self.host = port, path, host
        self.url = f"http://127.0.0.1:{port}{path}"
        self.answers: dict[str, Counter[str]] = {"new-connection": Counter(), "keep-alive": Counter()}
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(name,), daemon=True) for name in self.answers
        ]

    def _run(self, name: str) -> None:
        client = httpx.Client(timeout=5, trust_env=False) if name == "keep-alive" else None
        next_at = time.monotonic()
        while not self.stop.is_set():
            try:
                if client is not None:
                    answer = client.get(self.url, headers={"Host": self.host})
                    self.answers[name][f"{answer.status_code} {answer.text.strip()}"] += 1
                else:
                    self.answers[name][fresh_get(self.port, self.path, self.host)] += 1
            except (httpx.HTTPError, OSError, IndexError) as exc:
                self.answers[name][type(exc).__name__] += 1
            next_at += 1 / RATE
            time.sleep(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)


def ports_seen_in_etcd(settings: Settings, app: str, stop: threading.Event, seen: set[int]) -> None:
    async def watch() -> None:
        async with connect(settings.etcd_url) as client:
            while not stop.is_set():
                seen.update(i.port for i in await list_instances(client, app=app, env="pre"))
                await asyncio.sleep(0.05)

    asyncio.run(watch())


def test_a_release_whose_auto_tests_fail_never_serves_a_request(settings: Settings, app: str) -> None:
    live = deliver(request(settings, app, "v1", expect="v1"))
    assert live.state is not None and live.state.is_completed(), live.state
    (v1,) = running_instances(docker_client(settings.docker_url), app=app, env="pre")
    url, host = f"http://127.0.0.1:{settings.nginx_port}/version.txt", f"{app}.pre.localhost"
    eventually(
        lambda: httpx.get(url, headers={"Host": host}).text == "v1\n", timeout=10, what="v1 through nginx"
    )

    # v2 is healthy at once, but its auto-tests take 3 s and then fail.
    unverified = request(settings, app, "v2", expect="v2").model_copy(
        update={
            "auto_tests": AutoTests(
                http=[HttpCheck(path="/version.txt", contains="v2")], command=["sh", "-c", "sleep 3; exit 1"]
            )
        }
    )
    seen: set[int] = set()
    stop_watch = threading.Event()
    watcher = threading.Thread(target=ports_seen_in_etcd, args=(settings, app, stop_watch, seen), daemon=True)
    watcher.start()
    started = time.monotonic()
    with Load(settings.nginx_port, "/version.txt", host) as load:
        failed = deliver(unverified)
    seconds = time.monotonic() - started
    stop_watch.set()
    watcher.join(timeout=5)

    assert failed.state is not None and failed.state.is_failed(), failed.state
    assert "auto-test" in str(failed.state.message)
    assert [r.status for r in releases(settings, app)] == [ReleaseStatus.LIVE, ReleaseStatus.ROLLED_BACK]
    for name, answers in load.answers.items():
        assert set(answers) == {"200 v1"}, f"{name}: {dict(answers)}"  # never v2, never an error
        assert answers["200 v1"] >= 0.6 * RATE * seconds, f"{name}: {answers['200 v1']} in {seconds:.1f}s"
    assert seen == {v1.port}, f"registered during the release: {sorted(seen)}"
