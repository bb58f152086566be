"""Workspaces and release directories past their retention, on the host that holds them.

- A **workspace** (``workspaces/{flow run id}``: a delivery's checkout and build outputs) is removed when
  nothing in it was written for longer than the retention and its delivery run is over. Whether a run is
  over is Prefect's word (``shipline.flow_runs.unfinished_flow_runs``): the workspace is named by its
  flow run's id, so a run that is scheduled, pending, running or paused (a PROD approval waiting) keeps
  its workspace however old, and a run Prefect does not know (deleted, or made outside a flow) goes by
  age alone. Age is the newest modification anywhere in the tree, so a long build that still writes is
  young.
- A **release directory** (``releases/{app}/{env}/{number}``: the rendered compose file) is removed past
  its retention unless its release is live in its environment or being deployed: the live release's
  compose file is the one an operator reads (``docker compose -p {app}-{env} -f … ps``) and the one a
  deploy's ``compose up`` runs. Rollback and retire need none (a rollback replays the release request kept
  in etcd; retire finds instances by their labels).

Removal is a rename to a hidden ``.removing-{name}`` beside it, then the tree goes: a directory vanishes
from its name at once, and what an interrupted removal leaves is hidden and removed by the next run.
Symbolic links are never followed. Anything else in these directories is not Shipline's and is left alone.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from shipline.flow_runs import unfinished_flow_runs
from shipline.housekeeping.report import Action, Item, Kind
from shipline.names import NAME_PATTERN
from shipline.release.history import Release, ReleaseStatus
from shipline.sizes import tree_usage

REMOVING = ".removing-"
"""Prefix of a directory being removed (hidden, so nothing takes it for a workspace or a release)."""
_NUMBER = re.compile(r"[0-9]{1,9}")

Log = Callable[[str], None]
RunStates = Callable[[Collection[str]], Mapping[str, str]]
"""Which of these flow run ids are runs not over yet, with their state (``unfinished_flow_runs``)."""


class Directory(BaseModel):
    """A workspace or a release directory as found on disk."""

    kind: Kind
    path: Path
    name: str
    """Relative to Shipline's home, as the table shows it."""
    modified: datetime
    """The newest modification of the directory or anything in it."""
    bytes: int
    """Disk space its files take."""
    leftover: bool = False
    """Left, renamed, by a removal that was interrupted."""
    release: tuple[str, str, int] | None = None
    """App, environment and number of a release directory."""


class Decision(BaseModel):
    """A directory, whether it goes, and why."""

    directory: Directory
    remove: bool
    reason: str


def _directory(
    path: Path, *, kind: Kind, home: Path, release: tuple[str, str, int] | None = None
) -> Directory:
    modified, used = tree_usage(path)
    return Directory(
        kind=kind,
        path=path,
        name=str(path.relative_to(home)),
        modified=datetime.fromtimestamp(modified, UTC),
        bytes=used,
        leftover=path.name.startswith(REMOVING),
        release=release,
    )


def _subdirectories(parent: Path) -> list[Path]:
    """The real directories in ``parent`` (no links), by name; none when ``parent`` does not exist."""
    try:
        entries = list(os.scandir(parent))
    except FileNotFoundError:
        return []
    return sorted(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))


def scan_workspaces(workspaces_dir: Path, *, home: Path) -> list[Directory]:
    """Every workspace, and what an interrupted removal left there."""
    found = []
    for path in _subdirectories(workspaces_dir):
        if path.name.startswith(".") and not path.name.startswith(REMOVING):
            continue
        try:
            found.append(_directory(path, kind=Kind.WORKSPACE, home=home))
        except FileNotFoundError:  # removed meanwhile
            continue
    return found


def scan_release_dirs(releases_dir: Path, *, home: Path) -> list[Directory]:
    """Every ``{app}/{env}/{number}`` directory, and what an interrupted removal left there."""
    found = []
    for app_dir in _subdirectories(releases_dir):
        if not NAME_PATTERN.fullmatch(app_dir.name):
            continue
        for env_dir in _subdirectories(app_dir):
            if not NAME_PATTERN.fullmatch(env_dir.name):
                continue
            for path in _subdirectories(env_dir):
                number = path.name.removeprefix(REMOVING)
                if not _NUMBER.fullmatch(number):
                    continue
                release = (app_dir.name, env_dir.name, int(number))
                try:
                    found.append(_directory(path, kind=Kind.RELEASE_DIR, home=home, release=release))
                except FileNotFoundError:
                    continue
    return found


def _days(seconds: float) -> str:
    return f"{seconds / 86400:.1f} days"


def select_workspaces(
    found: Sequence[Directory], *, now: datetime, retention_days: float, unfinished: Mapping[str, str]
) -> list[Decision]:
    """Decide which workspaces go.

    Args:
        found: The workspaces on disk.
        now: The time of the run.
        retention_days: Days a workspace is kept after its last write.
        unfinished: The runs that are not over, by flow run id, with their state ("Running").
    """
    decisions = []
    for directory in found:
        age = (now - directory.modified).total_seconds()
        run_state = unfinished.get(directory.path.name)
        if directory.leftover:
            decision = Decision(directory=directory, remove=True, reason="left by an interrupted removal")
        elif run_state is not None:
            reason = f"in use: its delivery run is {run_state} (last written {_days(age)} ago)"
            decision = Decision(directory=directory, remove=False, reason=reason)
        elif age > retention_days * 86400:
            reason = f"untouched for {_days(age)} (retention {retention_days:g} days), its run is over"
            decision = Decision(directory=directory, remove=True, reason=reason)
        else:
            reason = f"written {_days(age)} ago (retention {retention_days:g} days)"
            decision = Decision(directory=directory, remove=False, reason=reason)
        decisions.append(decision)
    return decisions


def select_release_dirs(
    found: Sequence[Directory], *, now: datetime, retention_days: float, releases: Sequence[Release]
) -> list[Decision]:
    """Decide which release directories go.

    Args:
        found: The release directories on disk.
        now: The time of the run.
        retention_days: Days a release directory is kept after it was written.
        releases: Every release record (etcd): a live or deploying release keeps its directory.
    """
    records = {(r.app, r.env, r.number): r for r in releases}
    decisions = []
    for directory in found:
        age = (now - directory.modified).total_seconds()
        record = records.get(directory.release) if directory.release else None
        if directory.leftover:
            decision = Decision(directory=directory, remove=True, reason="left by an interrupted removal")
        elif record is not None and record.status is ReleaseStatus.LIVE:
            reason = f"release {record.number} is live in {record.env}"
            decision = Decision(directory=directory, remove=False, reason=reason)
        elif record is not None and record.status is ReleaseStatus.DEPLOYING:
            reason = f"release {record.number} is being deployed to {record.env}"
            decision = Decision(directory=directory, remove=False, reason=reason)
        elif age > retention_days * 86400:
            what = f"release {record.number} is {record.status}" if record else "no release record"
            reason = f"untouched for {_days(age)} (retention {retention_days:g} days); {what}"
            decision = Decision(directory=directory, remove=True, reason=reason)
        else:
            reason = f"written {_days(age)} ago (retention {retention_days:g} days)"
            decision = Decision(directory=directory, remove=False, reason=reason)
        decisions.append(decision)
    return decisions


def remove_directory(path: Path) -> None:
    """Remove the tree at ``path``: first renamed to a hidden name beside it, then deleted.

    Raises:
        OSError: if it cannot be renamed or deleted (what is left is hidden, for the next run).
    """
    hidden = path if path.name.startswith(REMOVING) else path.with_name(REMOVING + path.name)
    if hidden != path:
        path.rename(hidden)
    shutil.rmtree(hidden)


def carry_out(decisions: Sequence[Decision], *, dry_run: bool, log: Log) -> list[Item]:
    """Remove the directories decided on (none in a dry run); one row per directory, each removal logged."""
    items = []
    for decision in decisions:
        directory = decision.directory
        action = Action.KEPT
        reason = decision.reason
        if decision.remove and dry_run:
            action = Action.WOULD_REMOVE
        elif decision.remove:
            try:
                remove_directory(directory.path)
            except OSError as exc:
                action, reason = Action.FAILED, f"{reason}; removing it failed: {exc}"
                log(f"could not remove {directory.kind.value} {directory.name}: {exc}")
            else:
                action = Action.REMOVED
                log(f"removed {directory.kind.value} {directory.name} ({directory.bytes} bytes): {reason}")
        items.append(
            Item(
                kind=directory.kind, name=directory.name, action=action, reason=reason, bytes=directory.bytes
            )
        )
    return items


def sweep_workspaces(
    workspaces_dir: Path,
    *,
    home: Path,
    now: datetime,
    retention_days: float,
    dry_run: bool,
    log: Log,
    unfinished_runs: RunStates = unfinished_flow_runs,
) -> list[Item]:
    """Remove the workspaces past ``retention_days`` whose delivery run is over; a row for every workspace.

    Raises:
        ServiceUnavailableError: Prefect does not answer (whether a run is over is its word): nothing is
            removed.
    """
    found = scan_workspaces(workspaces_dir, home=home)
    unfinished = unfinished_runs([d.path.name for d in found]) if found else {}
    decisions = select_workspaces(found, now=now, retention_days=retention_days, unfinished=unfinished)
    return carry_out(decisions, dry_run=dry_run, log=log)


def sweep_release_dirs(
    releases_dir: Path,
    *,
    home: Path,
    now: datetime,
    retention_days: float,
    releases: Sequence[Release],
    dry_run: bool,
    log: Log,
) -> list[Item]:
    """Remove the release directories past ``retention_days`` whose release is neither live nor being
    deployed; a row for every release directory."""
    found = scan_release_dirs(releases_dir, home=home)
    decisions = select_release_dirs(found, now=now, retention_days=retention_days, releases=releases)
    return carry_out(decisions, dry_run=dry_run, log=log)
