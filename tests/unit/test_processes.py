import json
import os
import signal
import sys
from pathlib import Path

import pytest

from shipline.errors import StackError
from shipline.stack.processes import ProcessTable, process_start_ticks
from tests.processes import group_members
from tests.waiting import eventually

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def table(tmp_path: Path) -> ProcessTable:
    return ProcessTable(tmp_path / "run")


def test_spawn_records_a_live_process_and_stop_ends_it(table: ProcessTable, tmp_path: Path) -> None:
    record = table.spawn("sleeper", SLEEPER, log=tmp_path / "logs" / "sleeper.log")
    assert table.running("sleeper") == record
    assert record.alive
    assert "starting sleeper" in (tmp_path / "logs" / "sleeper.log").read_text()
    assert table.stop("sleeper", timeout=5)
    assert not record.alive
    assert table.get("sleeper") is None
    assert group_members(record.pid) == []


def test_stop_kills_the_whole_process_group(table: ProcessTable, tmp_path: Path) -> None:
    # A parent that ignores SIGTERM and has a child: both must be gone after stop.
    code = (
        "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    )
    record = table.spawn("stubborn", [sys.executable, "-c", code], log=tmp_path / "stubborn.log")
    assert eventually(
        lambda: len(group_members(record.pid)) == 2, timeout=10, what="the parent and its child running"
    )
    assert table.stop("stubborn", timeout=0.5)
    assert group_members(record.pid) == []


def test_a_recycled_pid_is_not_ours_and_is_never_signalled(table: ProcessTable, tmp_path: Path) -> None:
    # Record this very test process under a wrong start time, as if its pid had been recycled.
    table.run_dir.mkdir(parents=True)
    ticks = process_start_ticks(os.getpid())
    assert ticks is not None
    record = {
        "name": "old",
        "pid": os.getpid(),
        "start_ticks": ticks + 1,
        "command": ["x"],
        "log": "x",
        "started_at": 0.0,
    }
    (table.run_dir / "old.json").write_text(json.dumps(record))
    assert table.running("old") is None
    assert table.stop("old") is False  # would have killed pytest itself otherwise
    assert table.get("old") is None


def test_unreadable_record_counts_as_absent(table: ProcessTable) -> None:
    table.run_dir.mkdir(parents=True)
    (table.run_dir / "broken.json").write_text("{not json")
    assert table.get("broken") is None
    assert table.running("broken") is None


def test_zombie_counts_as_gone(table: ProcessTable, tmp_path: Path) -> None:
    record = table.spawn("quick", [sys.executable, "-c", "pass"], log=tmp_path / "quick.log")
    # The child exits; unreaped, it stays a zombie of this process.
    assert eventually(lambda: not record.alive, timeout=10, what="the exited child counted as gone")
    os.waitpid(record.pid, 0)


def test_spawn_of_a_missing_program_is_a_stack_error(table: ProcessTable, tmp_path: Path) -> None:
    with pytest.raises(StackError, match="cannot run /nonexistent/program"):
        table.spawn("ghost", ["/nonexistent/program"], log=tmp_path / "ghost.log")


def test_stop_of_nothing_returns_false(table: ProcessTable) -> None:
    assert table.stop("never-started") is False
    assert signal.SIGTERM  # the module under test did not alter signal handling of this process
