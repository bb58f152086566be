"""Background processes that Shipline starts, and only those.

A started process is recorded in ``{run_dir}/{name}.json`` with its pid and the kernel's start time of
that pid. A record counts as "ours and alive" only while both still match, so a pid recycled by the
system is never mistaken for ours, and never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from shipline.errors import StackError
from shipline.files import write_atomically


@dataclass(frozen=True)
class ProcessRecord:
    """What Shipline remembers of a process it started."""

    name: str
    pid: int
    start_ticks: int
    command: list[str]
    log: str
    started_at: float

    @property
    def alive(self) -> bool:
        """True while the pid runs and is still the process that was started."""
        return process_start_ticks(self.pid) == self.start_ticks


def process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if it is gone or a zombie.

    Zombies count as gone: a reaped or exited process no longer holds any resource, and the init
    process of some sandboxes never reaps orphans.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    state, start_ticks = fields[0], fields[19]
    if state in {"Z", "X"}:
        return None
    return int(start_ticks)


class ProcessTable:
    """The process records under one run directory.

    Args:
        run_dir: Directory of the ``{name}.json`` records (created on demand).
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def _path(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def get(self, name: str) -> ProcessRecord | None:
        """The record of ``name``, or None if there is none or it is unreadable."""
        try:
            data = json.loads(self._path(name).read_text())
            return ProcessRecord(**data)
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def running(self, name: str) -> ProcessRecord | None:
        """The record of ``name`` if that process is ours and alive."""
        record = self.get(name)
        return record if record is not None and record.alive else None

    def all(self) -> list[ProcessRecord]:
        """Every record on disk, alive or not."""
        if not self.run_dir.is_dir():
            return []
        records = (self.get(path.stem) for path in sorted(self.run_dir.glob("*.json")))
        return [record for record in records if record is not None]

    def spawn(
        self,
        name: str,
        command: Sequence[str],
        *,
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> ProcessRecord:
        """Start ``command`` in the background, in its own session, and record it.

        Args:
            name: Component name; the record is ``{run_dir}/{name}.json``.
            command: Program and arguments.
            log: File that receives stdout and stderr (appended).
            env: Environment of the process (default: this process's).
            cwd: Working directory.

        Returns:
            The record written.

        Raises:
            StackError: if the program cannot be executed.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            out.write(f"\n--- shipline: starting {name}: {' '.join(command)}\n".encode())
            out.flush()
            try:
                process = subprocess.Popen(
                    list(command),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=dict(env) if env is not None else None,
                    cwd=cwd,
                    start_new_session=True,  # its own process group: stopping it stops its children
                    close_fds=True,
                )
            except OSError as exc:
                raise StackError(f"{name}: cannot run {command[0]}: {exc.strerror}") from exc
        ticks = process_start_ticks(process.pid)
        record = ProcessRecord(name, process.pid, ticks or 0, list(command), str(log), time.time())
        self._write(record)
        return record

    def _write(self, record: ProcessRecord) -> None:
        path = self._path(record.name)
        write_atomically(path, json.dumps(asdict(record), indent=2))

    def forget(self, name: str) -> None:
        """Remove the record of ``name``."""
        self._path(name).unlink(missing_ok=True)

    def stop(self, name: str, *, timeout: float = 30.0, stop_signal: signal.Signals = signal.SIGTERM) -> bool:
        """Stop the process recorded as ``name`` if it is ours, and forget it.

        ``stop_signal`` (SIGTERM unless the program asks for another) goes to the process first so that
        daemons shut down cleanly (dockerd stops its containers, nginx finishes requests); whatever is
        left of its process group after ``timeout`` gets SIGKILL.

        Returns:
            True if a live process was stopped, False if there was nothing of ours to stop.
        """
        record = self.running(name)
        if record is None:
            self.forget(name)
            return False
        _signal(record.pid, stop_signal)
        if not _wait_gone(record, timeout):
            _signal_group(record.pid, signal.SIGKILL)
            _wait_gone(record, 5.0)
        # Children left in the group (a worker's flow-run subprocess) go with their parent.
        _signal_group(record.pid, signal.SIGKILL)
        self.forget(name)
        return True


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_gone(record: ProcessRecord, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not record.alive:
            return True
        _reap(record.pid)
        time.sleep(0.05)
    return not record.alive


def _reap(pid: int) -> None:
    # A process started by this very interpreter is our child: collect it so it does not linger as a zombie.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
