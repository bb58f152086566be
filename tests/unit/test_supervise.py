"""The supervisor of a stack daemon: restarted at once after a crash, backed off when it keeps failing,
stopped for good by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from shipline.stack.supervise import Supervision, describe_exit, read_supervision, state_path
from tests.waiting import eventually

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def start(tmp_path: Path, command: list[str]) -> tuple[subprocess.Popen[bytes], Path]:
    state = state_path(tmp_path, "daemon")
    state.parent.mkdir(parents=True, exist_ok=True)
    log = (tmp_path / "daemon.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "shipline.stack.supervise", "daemon", str(state), "--", *command],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return process, state


def supervision(tmp_path: Path) -> Supervision | None:
    return read_supervision(tmp_path, "daemon")


def child(tmp_path: Path, other_than: int | None = None) -> int | None:
    """The running child's pid, once it is not ``other_than``."""
    state = supervision(tmp_path)
    return state.pid if state is not None and state.pid != other_than else None


def restarted(tmp_path: Path, times: int) -> Supervision | None:
    state = supervision(tmp_path)
    return state if state is not None and state.restarts >= times else None


def test_a_killed_daemon_is_back_within_a_second_and_sigterm_ends_both(tmp_path: Path) -> None:
    process, _ = start(tmp_path, SLEEPER)
    try:
        first = eventually(lambda: child(tmp_path), what="the first child")
        os.kill(first, signal.SIGKILL)
        second = eventually(
            lambda: child(tmp_path, other_than=first),
            timeout=1.0,
            interval=0.02,
            what="a new child within a second of the kill",
        )
        state = supervision(tmp_path)
        assert state is not None and (state.restarts, state.last_exit) == (1, "killed by SIGKILL")
        assert "starting daemon again (killed by SIGKILL" in (tmp_path / "daemon.log").read_text()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert eventually(lambda: not _alive(second), timeout=5, what="the child to stop with its supervisor")
        final = supervision(tmp_path)
        assert final is not None and final.pid is None and final.restarts == 1
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_a_daemon_that_keeps_failing_is_backed_off(tmp_path: Path) -> None:
    process, _ = start(tmp_path, [sys.executable, "-c", "import sys; sys.exit(3)"])
    try:
        # 0.2 + 0.4 + 0.8 + 1.6 s of backoff: four restarts take about three seconds, not a busy loop.
        state = eventually(lambda: restarted(tmp_path, 4), timeout=10, what="four restarts")
        assert state.last_exit == "exit 3"
        assert (supervision(tmp_path) or state).restarts < 8
    finally:
        os.killpg(process.pid, signal.SIGKILL)


def test_exit_descriptions() -> None:
    assert describe_exit(0) == "exit 0"
    assert describe_exit(-9) == "killed by SIGKILL"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
