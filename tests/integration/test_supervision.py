"""Supervised daemons of the running stack: a `kill -9` is repaired within a second, and a killed
registrator costs no request through nginx."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest

from shipline.config import Settings
from shipline.docker import docker_client
from shipline.stack.lifecycle import State, all_components, component_status
from shipline.stack.processes import ProcessTable
from shipline.stack.supervise import read_supervision
from tests.images import busybox_web_image, free_ports, run_instance
from tests.waiting import eventually

DAEMONS = ["discover", "registrator", "logs-agent", "web", "worker-ci", "worker-pre", "worker-prod"]


def child_pid(settings: Settings, name: str, other_than: int | None = None) -> int | None:
    state = read_supervision(settings.run_dir, name)
    return state.pid if state is not None and state.pid not in (None, other_than) else None


def kill_child(settings: Settings, name: str) -> int:
    """SIGKILL the daemon itself (not its supervisor); return its pid."""
    pid = child_pid(settings, name)
    assert pid is not None, f"{name} is not supervised: restart the stack (shipline down; shipline up)"
    os.kill(pid, signal.SIGKILL)
    return pid


@pytest.mark.parametrize("name", DAEMONS)
def test_a_killed_daemon_is_back_within_a_second(settings: Settings, name: str) -> None:
    before = read_supervision(settings.run_dir, name)
    killed = kill_child(settings, name)
    eventually(
        lambda: child_pid(settings, name, other_than=killed),
        timeout=1.0,
        interval=0.02,
        what=f"{name} started again within a second of its kill",
    )
    after = read_supervision(settings.run_dir, name)
    assert before is not None and after is not None
    assert (after.restarts, after.last_exit) == (before.restarts + 1, "killed by SIGKILL")
    component = next(c for c in all_components(settings) if c.name == name)
    table = ProcessTable(settings.run_dir)
    up = eventually(
        lambda: component_status(component, table).state is State.UP,
        timeout=60,
        what=f"{name} answering again",
    )
    assert up


def test_a_killed_registrator_costs_no_request(settings: Settings, app: str) -> None:
    client = docker_client(settings.docker_url)
    repository = f"{settings.registry_address}/apps/supervisiontest"
    image = (
        f"{repository}@{busybox_web_image(client, repository, 'v1', {'healthz': 'ok', 'index.html': 'up'})}"
    )
    for port in free_ports(2):
        run_instance(client, image, app=app, env="pre", port=port)
    host = {"Host": f"{app}.pre.localhost"}
    eventually(
        lambda: httpx.get(settings.nginx_url, headers=host).status_code == 200,
        timeout=30,
        what="the app served through nginx",
    )
    outcomes: dict[str, int] = {"ok": 0, "failed": 0}
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:  # 50 requests a second, a new connection each, as curl would
        no_reuse = httpx.Limits(max_keepalive_connections=0)
        # 5 s, not less: on two shared cores a busy moment can hold a request that long without any
        # failure on the serving side; a refused connection or a 502/503 fails at once either way.
        with httpx.Client(timeout=5, limits=no_reuse, trust_env=False) as client:
            next_at = time.monotonic()
            while not stop.is_set():
                try:
                    status = client.get(settings.nginx_url, headers=host).status_code
                    ok = status == 200
                    if not ok:
                        failures.append(f"HTTP {status}")
                except httpx.HTTPError as exc:
                    ok = False
                    failures.append(f"{type(exc).__name__}: {exc}")
                outcomes["ok" if ok else "failed"] += 1
                next_at += 1 / 50
                time.sleep(max(0.0, next_at - time.monotonic()))

    loader = threading.Thread(target=load)
    loader.start()
    try:
        time.sleep(1)
        kill_child(settings, "registrator")
        # Longer than the killed registrator's lease (10 s): its keys must have been taken over by then.
        time.sleep(14)
    finally:
        stop.set()
        loader.join()
    assert outcomes["failed"] == 0, (outcomes, failures)
    assert outcomes["ok"] > 600  # about 15 s at 50 requests a second
