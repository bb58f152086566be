"""Check out one exact commit of an app repository into a workspace of its own.

Sources: a local directory (a git work tree or bare repository), a ``file://`` URL, or an ``http(s)://`` URL
(GitLab); the fetch is shallow (depth 1) for a branch, a tag or a full sha alike. A token for http(s) is
handed to git through the environment, never written into a file or onto a command line.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

from shipline.errors import CheckoutError

FULL_SHA = re.compile(r"[0-9a-f]{40}")
_REF = re.compile(r"[A-Za-z0-9._/@+-]{1,255}")


class CheckoutResult(BaseModel):
    """A workspace holding one commit."""

    source: str
    ref: str
    sha: str
    committed: datetime
    workspace: Path


def source_url(source: str) -> str:
    """The URL git fetches from: local paths become ``file://`` URLs so that shallow fetches work.

    Raises:
        CheckoutError: if the source is neither an existing directory nor a file/http(s) URL.
    """
    scheme = urlsplit(source).scheme
    if scheme in {"http", "https", "file"}:
        return source
    path = Path(source).expanduser()
    if not path.is_dir():
        raise CheckoutError(
            f"source {source!r} is neither a directory nor a file://, http:// or https:// URL",
            hint="give the path of a git repository or its clone URL",
        )
    return path.resolve().as_uri()


def _git_environment(url: str, token: SecretStr | None) -> dict[str, str]:
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",  # never wait for a password on a terminal
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "shipline",
        "GIT_AUTHOR_EMAIL": "shipline@localhost",
        "GIT_COMMITTER_NAME": "shipline",
        "GIT_COMMITTER_EMAIL": "shipline@localhost",
    }
    if token is not None and urlsplit(url).scheme in {"http", "https"}:
        # GitLab accepts a personal, project or CI token as the password of user "oauth2".
        basic = base64.b64encode(f"oauth2:{token.get_secret_value()}".encode()).decode()
        env.update(
            {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": "http.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
            }
        )
    return env


def _git(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise CheckoutError("git is not installed", hint="apt-get install git (make install)") from exc
    except subprocess.TimeoutExpired as exc:
        raise CheckoutError(
            f"git {args[0]} took longer than {timeout:.0f}s", hint="check the source"
        ) from exc
    if done.returncode != 0:
        raise _git_error(args, done.stderr.strip())
    return done.stdout.strip()


def _git_error(args: list[str], stderr: str) -> CheckoutError:
    last = stderr.splitlines()[-1] if stderr else "no output"
    if "couldn't find remote ref" in stderr or "not our ref" in stderr:
        return CheckoutError(
            f"ref not found: {last}", hint="check the branch, tag or sha (git ls-remote SOURCE)"
        )
    if "Authentication failed" in stderr or "could not read Username" in stderr or "403" in stderr:
        return CheckoutError(f"access denied: {last}", hint="set a token in the shipline-gitlab block")
    return CheckoutError(f"git {args[0]} failed: {last}", transient=True)


def checkout(
    source: str, *, ref: str | None, workspace: Path, token: SecretStr | None = None
) -> CheckoutResult:
    """Fetch ``ref`` of ``source`` (shallow) into ``workspace`` and check it out detached.

    A workspace that already holds the requested full sha is reused as it is, so a retried run does
    not fetch again.

    Args:
        source: Local directory, ``file://`` or ``http(s)://`` URL of the repository.
        ref: Branch, tag or full sha; None for the source's default branch (its HEAD).
        workspace: Directory for this run's checkout (created; replaced if it holds something else).
        token: Access token for http(s) sources.

    Returns:
        The resolved sha and the workspace.

    Raises:
        CheckoutError: if the source, the ref or access is wrong (``transient`` for other git failures).
    """
    wanted = ref or "HEAD"
    if _REF.fullmatch(wanted) is None or wanted.startswith("-") or ".." in wanted:
        raise CheckoutError(f"invalid ref {wanted!r}", hint="give a branch, tag or full commit sha")
    url = source_url(source)
    env = _git_environment(url, token)
    if FULL_SHA.fullmatch(wanted) and (workspace / ".git").is_dir():
        try:
            if _git(["rev-parse", "HEAD"], cwd=workspace, env=env) == wanted:
                return _result(source, wanted, workspace, env)
        except CheckoutError:
            pass  # an unusable workspace is replaced below
    if workspace.exists():
        shutil.rmtree(workspace)
    workspace.mkdir(parents=True)
    _git(["init", "--quiet"], cwd=workspace, env=env)
    _git(["fetch", "--quiet", "--depth", "1", "--no-tags", url, wanted], cwd=workspace, env=env)
    _git(["checkout", "--quiet", "--detach", "FETCH_HEAD"], cwd=workspace, env=env)
    return _result(source, wanted, workspace, env)


def _result(source: str, ref: str, workspace: Path, env: dict[str, str]) -> CheckoutResult:
    sha, committed = _git(["show", "-s", "--format=%H %cI", "HEAD"], cwd=workspace, env=env).split()
    return CheckoutResult(
        source=source, ref=ref, sha=sha, committed=datetime.fromisoformat(committed), workspace=workspace
    )
