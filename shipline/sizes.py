"""Sizes: the bytes a directory tree takes on disk, and sizes as operators read them in tables and logs."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def human_bytes(size: int) -> str:
    """``1536`` → ``1.5 KiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns


def tree_usage(path: Path) -> tuple[float, int]:
    """The newest modification time (epoch seconds) in the tree at ``path`` and the bytes its files take.

    Links are not followed; a file that vanishes meanwhile (a build still writing) is passed over.
    """
    top = path.lstat()
    newest, used, seen = top.st_mtime, 0, set()
    pending = [path]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            newest = max(newest, info.st_mtime)
            if stat.S_ISDIR(info.st_mode):
                pending.append(Path(entry.path))
            elif stat.S_ISREG(info.st_mode) and (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                used += info.st_blocks * 512
    return newest, used
