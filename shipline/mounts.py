"""Host mounts are the operator's decision: the paths a spec may mount, per environment.

Each environment's ``shipline-environment`` block holds ``host_mounts``, an allow-list of host paths
(read-only unless an entry says ``read_write``). A spec's ``build.mounts`` are checked against the ``ci``
environment (builds and unit tests run there) and its ``service.mounts`` against each environment it is
released to, at the delivery's spec stage and again by the release flow (a release run started by hand).
Some paths can never be allowed, whatever a block says: the root, ``/etc`` itself, the kernel's ``/proc``
and ``/sys``, root's home, the Docker socket and Docker's data, Shipline's own home, and any directory
holding one of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shipline.spec import Mount

NEVER_EXACT = ("/", "/etc")
"""Refused themselves; a path below them may be allowed (``/etc/java-17-openjdk``)."""
NEVER_TREES = ("/proc", "/sys", "/root", "/var/lib/docker", "/run/docker.sock", "/var/run/docker.sock")
"""Refused with everything below them, and so is every directory that holds one of them."""


class HostMount(BaseModel):
    """One host path specs may mount in an environment."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="Absolute host path; a spec may mount it or anything below it.")
    read_write: bool = Field(default=False, description="Whether specs may mount it writable.")

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or ".." in Path(value).parts:
            raise ValueError(f"{value!r} must be an absolute path without '..'")
        return value


def _real(path: str) -> Path:
    """``path`` with symlinks resolved as far as they exist on this host (``/var/run`` is ``/run``); as
    written where a link cannot be read."""
    try:
        return Path(os.path.realpath(path))
    except OSError:
        return Path(os.path.normpath(path))


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def never_allowed(path: str, home: Path | None = None) -> str | None:
    """Why ``path`` can never be mounted into a container, or None."""
    real = _real(path)
    trees = [*NEVER_TREES, *([str(home)] if home is not None else [])]
    for exact in NEVER_EXACT:
        if real == _real(exact):
            return f"{exact} itself can never be mounted"
    for tree in trees:
        root = _real(tree)
        if _within(real, root):
            return f"{path} is {tree} or inside it, which can never be mounted"
        if _within(root, real):
            return f"{path} holds {tree}, which can never be mounted"
    return None


def refused_entries(allowed: Iterable[HostMount], home: Path | None = None) -> list[str]:
    """The entries of an allow-list that can never be allowed, each with its reason."""
    return [reason for entry in allowed if (reason := never_allowed(entry.path, home)) is not None]


def mount_problems(
    mounts: Sequence[Mount],
    allowed: Sequence[HostMount],
    *,
    env: str,
    field: str,
    home: Path | None = None,
) -> list[str]:
    """Why each of a spec's ``mounts`` may not be mounted in ``env``; empty when all may.

    Each problem names the mount, the environment and the block to change.
    """
    problems = []
    fix = f"an operator adds it to host_mounts of the shipline-environment block {env!r} (Prefect UI, Blocks)"
    for index, mount in enumerate(mounts):
        source, read_only = mount.source, mount.read_only
        where = f"{field}[{index}] {source}"
        if (reason := never_allowed(source, home)) is not None:
            problems.append(f"{where}: {reason}, in any environment")
            continue
        real = _real(source)
        covering = [entry for entry in allowed if _within(real, _real(entry.path))]
        if not covering:
            problems.append(f"{where} is not a host path {env} allows: {fix}")
        elif not read_only and not any(entry.read_write for entry in covering):
            problems.append(f"{where} is allowed read-only in {env}, not writable: set read_only, or {fix}")
    return problems
