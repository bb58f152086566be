"""Where ``shipline run`` fetches from: a URL, a git repository, or a plain directory snapshotted into one."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from shipline.errors import CheckoutError
from shipline.names import NAME_PATTERN

_IDENTITY = {
    "GIT_AUTHOR_NAME": "shipline",
    "GIT_AUTHOR_EMAIL": "shipline@localhost",
    "GIT_COMMITTER_NAME": "shipline",
    "GIT_COMMITTER_EMAIL": "shipline@localhost",
}


def _git(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **_IDENTITY, "GIT_TERMINAL_PROMPT": "0"}
    return subprocess.run(["git", *args], env=env, capture_output=True, text=True, timeout=300, check=False)


def resolve_source(source: str, *, sources_dir: Path) -> str:
    """The location the pipeline fetches ``source`` from.

    URLs and git repositories are used as they are. A directory that is not the root of a git repository
    (``examples/hello-python``) is committed into ``sources_dir/{name}.git``, a new commit only when its
    content changed, so that every build has a commit sha.

    Raises:
        CheckoutError: if the source does not exist or cannot be snapshotted.
    """
    if urlsplit(source).scheme in {"http", "https", "file"}:
        return source
    path = Path(source).expanduser().resolve()
    if not path.is_dir():
        raise CheckoutError(f"source {source!r} is not a directory or a git URL")
    if (path / ".git").exists() or ((path / "HEAD").is_file() and (path / "objects").is_dir()):
        return str(path)
    name = path.name.lower()
    if NAME_PATTERN.fullmatch(name) is None:
        raise CheckoutError(
            f"directory name {path.name!r} cannot name a repository", hint="rename it, e.g. my-app"
        )
    repository = sources_dir / f"{name}.git"
    if not repository.exists():
        sources_dir.mkdir(parents=True, exist_ok=True)
        _git(["init", "--quiet", "--bare", "--initial-branch=main", str(repository)])
    tree = ["--git-dir", str(repository), "--work-tree", str(path)]
    added = _git([*tree, "add", "--all"])
    if added.returncode != 0:
        raise CheckoutError(f"cannot snapshot {path}: {added.stderr.strip()}")
    if (
        _git([*tree, "diff", "--cached", "--quiet"]).returncode != 0
        or _git([*tree, "rev-parse", "HEAD"]).returncode
    ):
        committed = _git([*tree, "commit", "--quiet", "-m", f"snapshot of {path}"])
        if committed.returncode != 0:
            raise CheckoutError(f"cannot snapshot {path}: {committed.stderr.strip()}")
    return str(repository)
