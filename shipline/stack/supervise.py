"""Keeping a daemon of the local stack running: restart it within a second of a crash, back off if it
keeps failing, and record why it stopped.

``up`` starts each supervised component as ``python -m shipline.stack.supervise NAME STATE -- COMMAND``:
this process runs COMMAND as its child, in the process group that ``down`` stops, and starts it again
when it exits unasked — at once after a run of at least ``STEADY_SECONDS``, else after a backoff that
doubles up to ``MAX_BACKOFF_SECONDS``. Its state file (``{run_dir}/supervise/{NAME}.json``) holds the
child's pid, the number of restarts and the last exit, which ``shipline status`` shows. SIGTERM stops the
child and then this process; nothing is restarted then.

Why not supervisord: the stack already records every process it starts by pid and kernel start time and
stops exactly those, with one log and one status line per component; a small loop per daemon keeps that
model whole, where a second process manager would need its own configuration, socket and state. On real
hosts, systemd does this job (``shipline units``).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from pydantic import BaseModel

from shipline.files import write_atomically

STEADY_SECONDS = 10.0
"""A child that ran this long before it exited is restarted at once."""
FIRST_BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 30.0
STOP_SECONDS = 25.0


class Supervision(BaseModel):
    """What the supervisor of one daemon knows, as its state file holds it."""

    pid: int | None = None
    """The running child, if any."""
    restarts: int = 0
    last_exit: str | None = None
    """Why the child last stopped: ``exit 3``, ``killed by SIGKILL``."""
    last_exit_at: float | None = None


def state_path(run_dir: Path, name: str) -> Path:
    return run_dir / "supervise" / f"{name}.json"


def read_supervision(run_dir: Path, name: str) -> Supervision | None:
    """The state of ``name``'s supervisor, or None if it is not supervised (or never wrote one)."""
    try:
        return Supervision.model_validate_json(state_path(run_dir, name).read_text())
    except (OSError, ValueError):
        return None


def describe_exit(code: int) -> str:
    """``exit 3`` or ``killed by SIGKILL``, from a Popen return code."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


def supervise(name: str, state: Path, command: list[str]) -> int:
    """Run ``command`` until SIGTERM or SIGINT, restarting it whenever it exits unasked."""
    stopping = False
    child: subprocess.Popen[bytes] | None = None
    record = Supervision()

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    backoff = FIRST_BACKOFF_SECONDS
    while not stopping:
        started = time.monotonic()
        child = subprocess.Popen(command)  # inherits this process's group, stdout and stderr (the log)
        record.pid = child.pid
        write_atomically(state, record.model_dump_json())
        code = child.wait()
        if stopping:
            break
        ran = time.monotonic() - started
        record = record.model_copy(
            update={
                "pid": None,
                "restarts": record.restarts + 1,
                "last_exit": describe_exit(code),
                "last_exit_at": time.time(),
            }
        )
        write_atomically(state, record.model_dump_json())
        delay = 0.0 if ran >= STEADY_SECONDS else backoff
        backoff = FIRST_BACKOFF_SECONDS if ran >= STEADY_SECONDS else min(backoff * 2, MAX_BACKOFF_SECONDS)
        print(
            f"\n--- shipline: starting {name} again ({record.last_exit} after {ran:.1f}s; "
            f"restart {record.restarts}, in {delay:.1f}s)",
            flush=True,
        )
        deadline = time.monotonic() + delay
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.05)
    if child is not None:
        try:
            child.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    write_atomically(state, record.model_copy(update={"pid": None}).model_dump_json())
    return 0


def main(argv: list[str]) -> int:
    """``python -m shipline.stack.supervise NAME STATE -- COMMAND...``."""
    if len(argv) < 4 or argv[2] != "--":
        print("usage: python -m shipline.stack.supervise NAME STATE -- COMMAND...", file=sys.stderr)
        return 2
    return supervise(argv[0], Path(argv[1]), argv[3:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
