"""The stack's registry frees the space of deleted images: its blob collection, with the registry read-only.

Deleting a manifest (housekeeping does it through the API) frees nothing on disk: its layers stay until
the registry's offline ``garbage-collect`` sweeps every blob no manifest references. That command must not
run beside a registry that takes pushes — a layer uploaded while it marks, whose manifest is not pushed
yet, looks unreferenced and is swept, leaving a pushed image with a missing layer. So, under the stack's
lock (no ``up`` or ``down`` meanwhile):

1. the registry is restarted in maintenance mode (``storage.maintenance.readonly``): pulls keep being
   served, a push is refused with an error the pusher retries (a delivery's push task retries);
2. ``garbage-collect`` runs on its configuration, without ``--delete-untagged``: a manifest that lost its
   tag (a rebuilt ``{sha}`` tag, an old base image tag) still holds its layers, since a release may deploy
   it by digest; only what no manifest references goes;
3. the registry is restarted with its usual configuration, whatever happened in step 2.

Only a registry this host's ``shipline up`` started (its process record) is handled, since it is stopped
and started again; any other registry — the one a production block points at — gets the same three steps
from its operator (see the README).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable

from pydantic import BaseModel

from shipline.config import Settings
from shipline.errors import StackError
from shipline.sizes import tree_usage
from shipline.stack.components import Registry
from shipline.stack.lifecycle import stack_lock, start_missing
from shipline.stack.processes import ProcessTable

Report = Callable[[str], None]

GC_TIMEOUT_SECONDS = 1800.0
"""Longest the registry stays read-only for one collection."""
OFFLINE_STEPS = (
    "on the registry's host: make it read-only (storage: maintenance: readonly: enabled: true) or stop it, "
    "run `docker-registry garbage-collect CONFIG` (no --delete-untagged), then restore it"
)
_SUMMARY = re.compile(r"(\d+) blobs marked, (\d+) blobs and (\d+) manifests eligible for deletion")


class BlobCollection(BaseModel):
    """What one collection did."""

    registry: str
    dry_run: bool
    blobs_deleted: int
    """Blobs the collection found unreferenced (and deleted, unless a dry run)."""
    bytes_before: int
    bytes_after: int
    read_only_seconds: float
    """How long pushes were refused."""

    @property
    def freed(self) -> int:
        return max(0, self.bytes_before - self.bytes_after)


def managed_registry(settings: Settings) -> bool:
    """True when the stack's registry runs on this host as a process ``shipline up`` started."""
    return ProcessTable(settings.run_dir).running(Registry(settings).name) is not None


def _restart(component: Registry, table: ProcessTable, *, read_only: bool, report: Report) -> None:
    table.stop(component.name, timeout=20.0, stop_signal=component.stop_signal)
    component.read_only = read_only
    report(f"  registry     restarting {'read-only' if read_only else 'with pushes again'}")
    start_missing([component], table, report)


def _garbage_collect(component: Registry, *, dry_run: bool) -> int:
    command = component.garbage_collect_command(dry_run=dry_run)
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=GC_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(
            f"registry: garbage-collect took longer than {GC_TIMEOUT_SECONDS:.0f}s and was stopped",
            hint="run it again: what it deleted stays deleted, the rest is collected next time",
        ) from exc
    output = done.stdout + done.stderr
    if done.returncode != 0:
        last = [line for line in output.splitlines() if line.strip()][-3:]
        raise StackError(
            f"registry: garbage-collect failed (exit {done.returncode}): {' / '.join(last)}",
            hint=f"run `{' '.join(command)}` to see its whole output",
        )
    summary = _SUMMARY.search(output)
    return int(summary.group(2)) if summary else 0


def collect_blob_space(
    settings: Settings, *, dry_run: bool = False, report: Report = print
) -> BlobCollection:
    """Free the space of blobs no manifest references, in the stack's own registry (module docstring).

    Args:
        settings: The stack.
        dry_run: Only count what would go; the registry is not restarted.
        report: Receives one progress line at a time.

    Raises:
        StackError: if the registry is not one this host's ``shipline up`` started, if the collection
            fails, or if the registry does not answer again afterwards (``shipline up`` starts it).
    """
    component = Registry(settings)
    table = ProcessTable(settings.run_dir)
    with stack_lock(settings):
        if table.running(component.name) is None:
            raise StackError(
                f"registry: {component.url} was not started by `shipline up` on this host, so it cannot be "
                "made read-only here",
                hint=OFFLINE_STEPS,
            )
        _, before = tree_usage(component.storage_dir)
        began = time.monotonic()
        if dry_run:
            deleted = _garbage_collect(component, dry_run=True)
        else:
            try:
                _restart(component, table, read_only=True, report=report)
                deleted = _garbage_collect(component, dry_run=False)
            finally:  # pushes again, whatever failed; the usual configuration is written even if it fails
                _restart(component, table, read_only=False, report=report)
        read_only = 0.0 if dry_run else time.monotonic() - began
        _, after = tree_usage(component.storage_dir)
    report(
        f"  registry     {deleted} unreferenced blob(s) {'found' if dry_run else 'deleted'}; "
        f"{before - after} bytes freed; read-only for {read_only:.1f}s"
    )
    return BlobCollection(
        registry=settings.registry_address,
        dry_run=dry_run,
        blobs_deleted=deleted,
        bytes_before=before,
        bytes_after=after,
        read_only_seconds=read_only,
    )
