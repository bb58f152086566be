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


def inside(root: Path, relative: str, *, what: str) -> Path:
    """``root / relative``, refused when any link on the way (or the path itself) leads out of ``root``.

    For paths a repository names (its artifact, JUnit report, scan paths): the repository's content is
    untrusted, and a link such as ``reports -> /etc`` must not make Shipline read or delete a host file.

    Raises:
        BuildError: naming ``what`` and the path, when it resolves outside ``root``.
    """
    from shipline.errors import BuildError

    path = root / relative
    real_root = root.resolve()
    if not path.resolve().is_relative_to(real_root):
        raise BuildError(
            f"{what} {relative} leads out of the workspace (a symbolic link on its path points outside)",
            hint="paths in shipline.yaml must stay inside the repository; links inside it are fine",
        )
    return path
