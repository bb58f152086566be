"""A job's user gets its workspace through ACLs: writable, its .git readable only, nothing outside it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from shipline.workspace_access import grant_workspace

UID = 65534


def acl(path: Path) -> set[str]:
    """The ACL entries of ``path`` as getfacl prints them (``user:65534:rwx``, ``default:user:65534:rwx``)."""
    done = subprocess.run(
        ["getfacl", "--omit-header", "--absolute-names", "--numeric", "--", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return {line.split("#", 1)[0].strip() for line in done.stdout.splitlines() if line.strip()}


def test_the_tree_is_writable_its_git_readable_and_what_comes_later_inherits(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    (workspace / "src").mkdir(parents=True)
    (workspace / "src" / "main.py").write_text("print(1)\n")
    (workspace / ".git" / "objects").mkdir(parents=True)
    (workspace / ".git" / "config").write_text("[core]\n")
    grant_workspace(workspace, UID)
    assert f"user:{UID}:rwx" in acl(workspace) and f"default:user:{UID}:rwx" in acl(workspace)
    assert f"user:{UID}:rw-" in acl(workspace / "src" / "main.py")  # X: no execute bit for a plain file
    assert f"user:{UID}:r-x" in acl(workspace / ".git") and f"default:user:{UID}:r-x" in acl(
        workspace / ".git"
    )
    assert f"user:{UID}:r--" in acl(workspace / ".git" / "config")
    (workspace / "src" / "later.txt").write_text("made by the host after the grant\n")
    inherited = acl(workspace / "src" / "later.txt")  # the default entry, masked to the file's mode
    assert f"user:{UID}:rwx" in inherited and "mask::rw-" in inherited


def test_a_link_in_the_repository_never_grants_what_it_points_to(tmp_path: Path) -> None:
    outside = tmp_path / "host-secret"
    outside.write_text("secret\n")
    outside_dir = tmp_path / "host-dir"
    outside_dir.mkdir()
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "secret").symlink_to(outside)
    (workspace / "dir").symlink_to(outside_dir)
    grant_workspace(workspace, UID)
    assert not any(str(UID) in entry for entry in acl(outside) | acl(outside_dir))
    assert os.stat(outside).st_uid == 0  # owners stay as they were
