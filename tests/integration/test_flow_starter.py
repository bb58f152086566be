"""The flow starter: flow-run processes forked from a parent that has Prefect and the flows imported.

The launcher (the work pools' command) must be, to the worker, exactly the flow run's process: the run's
environment and streams, its exit code, SIGTERM reaching the run, and a killed launcher taking the run with
it. These tests drive the real starter and launcher; the run they start is ``prefect.engine`` itself,
pointed at an API that never answers (so that it stays running) or given a flow run that does not exist.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipline.stack.flow_starter import SOCKET_VARIABLE
from tests.waiting import eventually


@pytest.fixture
def starter(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    path = tmp_path / "starter.sock"
    process = subprocess.Popen(
        [sys.executable, "-m", "shipline.stack.flow_starter", "serve", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "flow starter ready" in line, f"the flow starter did not start: {line!r}"
        yield process, path
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def silent_api() -> Iterator[str]:
    """An API address that takes connections and never answers: a run asking it waits."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/api"
    finally:
        listener.close()


def _launch(environment: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "shipline.stack.flow_starter"],
        env=environment,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _children(pid: int) -> list[int]:
    listed = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in listed.stdout.split()]


def _run_environment(api: str, path: Path | None) -> dict[str, str]:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_", SOCKET_VARIABLE))
    }
    environment.update({"PREFECT_API_URL": api, "PREFECT__FLOW_RUN_ID": str(uuid.uuid4())})
    if path is not None:
        environment[SOCKET_VARIABLE] = str(path)
    return environment


def test_a_run_started_by_the_starter_gets_the_launchers_environment_streams_and_exit_code(
    starter: tuple[subprocess.Popen[str], Path], tmp_path: Path
) -> None:
    process, path = starter
    environment = _run_environment("http://127.0.0.1:9/api", path)  # nothing listens: the run fails
    environment["PREFECT_API_REQUEST_TIMEOUT"] = "2"
    launched = _launch(environment, tmp_path)
    out, err = launched.communicate(timeout=120)
    # prefect.engine ran with the launcher's flow run id, wrote to the launcher's stderr, and failed.
    assert launched.returncode == 1, (out, err)
    assert environment["PREFECT__FLOW_RUN_ID"] in out + err, (out, err)
    assert process.poll() is None, "the starter must keep serving after a run"


def test_sigterm_to_the_launcher_reaches_the_run(
    starter: tuple[subprocess.Popen[str], Path], silent_api: str, tmp_path: Path
) -> None:
    process, path = starter
    launched = _launch(_run_environment(silent_api, path), tmp_path)
    assert eventually(lambda: len(_children(process.pid)) == 1, timeout=30, what="the run forked")
    (run,) = _children(process.pid)
    launched.send_signal(signal.SIGTERM)
    launched.communicate(timeout=60)
    assert launched.returncode != 0
    assert eventually(lambda: run not in _children(process.pid), timeout=30, what="the run ended")


def test_a_killed_launcher_takes_its_run_with_it(
    starter: tuple[subprocess.Popen[str], Path], silent_api: str, tmp_path: Path
) -> None:
    process, path = starter
    launched = _launch(_run_environment(silent_api, path), tmp_path)
    assert eventually(lambda: len(_children(process.pid)) == 1, timeout=30, what="the run forked")
    (run,) = _children(process.pid)
    launched.kill()  # its worker's host died
    launched.wait(timeout=10)
    assert eventually(lambda: run not in _children(process.pid), timeout=10, what="the orphaned run killed")


def test_without_a_starter_the_launcher_is_prefects_engine(tmp_path: Path) -> None:
    environment = _run_environment("http://127.0.0.1:9/api", tmp_path / "no-such.sock")
    environment["PREFECT_API_REQUEST_TIMEOUT"] = "2"
    launched = _launch(environment, tmp_path)
    out, err = launched.communicate(timeout=120)
    assert launched.returncode == 1, (out, err)
    assert environment["PREFECT__FLOW_RUN_ID"] in out + err, (out, err)
