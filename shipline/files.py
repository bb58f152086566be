"""Files that readers never see half-written: write a hidden temporary file beside the target, then rename.

The temporary name starts with a dot and ends in ``.tmp``, so a reader that globs (nginx's ``include
*.conf``, a process table listing ``*.json``) never picks it up; the rename is atomic on one filesystem.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: Path, text: str, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``text`` in one step, creating its directory if needed.

    Args:
        path: The file to write.
        text: Its new content.
        mode: Permission bits for the file (default: the process umask's).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    if mode is not None:
        os.chmod(tmp, mode)
    tmp.replace(path)
