"""A job's user gets write access to its workspace through POSIX ACLs, leaving every owner as it is.

Job containers run as a non-root user (an environment block's ``job_uid``) with no capability, so root's
files in the workspace (the checkout, the host side's reports) are theirs to write only through an ACL
entry for that uid: ``rwX`` on the tree, and the same as the default ACL of every directory, so what is
created there later is writable too. ``chown`` would work as well, but it would hand the repository's
``.git`` to that uid: git on the host then refuses the workspace ("dubious ownership") when a retried run
reuses it, and a build could rewrite ``.git/config`` for the host's next git command. So ``.git`` gets
read access only, and the owners stay root's.

The walk is physical (``setfacl -P``): a link in the repository, or one a previous job left, is never
followed, so no host file outside the workspace is ever granted.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from shipline.errors import BuildError
from shipline.programs import find_program

GIT_DIR = ".git"


def grant_workspace(workspace: Path, uid: int) -> None:
    """Let ``uid`` read and write ``workspace`` and everything in it, and read its ``.git``.

    Raises:
        BuildError: if setfacl is missing or refuses (a filesystem without ACLs).
    """
    setfacl = find_program("setfacl")
    if setfacl is None:
        raise BuildError(
            "setfacl is missing: job containers cannot be given their workspace",
            hint="make install (Debian package acl)",
        )
    root = workspace.resolve()
    _setfacl(setfacl, root, f"u:{uid}:rwX")
    git = root / GIT_DIR
    if git.is_dir() and not git.is_symlink():
        _setfacl(setfacl, git, f"u:{uid}:rX")


def _setfacl(setfacl: str, tree: Path, entry: str) -> None:
    done = subprocess.run(
        [setfacl, "-R", "-P", "-m", f"{entry},d:{entry}", "--", str(tree)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise BuildError(
            f"cannot give the job's user access to {tree}: {reason}",
            hint="workspaces must be on a filesystem with POSIX ACLs (ext4, xfs, btrfs, tmpfs)",
        )
