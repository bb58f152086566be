"""Checkout of one exact commit, against real git repositories on disk."""

import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from prefect.logging import disable_run_logger
from pydantic import SecretStr

from shipline.build.checkout import checkout, source_url
from shipline.errors import CheckoutError
from shipline.retries import retry_if_transient
from tasks.checkout import checkout_source


def git(*args: str, cwd: Path) -> str:
    identity = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env = {**identity, "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "app"
    path.mkdir()
    git("init", "-q", "-b", "main", cwd=path)
    for version in ("1", "2"):
        (path / "VERSION").write_text(version)
        git("add", "VERSION", cwd=path)
        git("commit", "-q", "-m", f"v{version}", cwd=path)
    git("tag", "v2", cwd=path)
    return path


def test_default_ref_is_the_head_commit(repo: Path, tmp_path: Path) -> None:
    result = checkout(str(repo), ref=None, workspace=tmp_path / "ws")
    assert result.sha == git("rev-parse", "HEAD", cwd=repo)
    assert result.committed.isoformat() == git("show", "-s", "--format=%cI", "HEAD", cwd=repo)
    assert (tmp_path / "ws" / "VERSION").read_text() == "2"
    assert git("rev-parse", "--is-shallow-repository", cwd=tmp_path / "ws") == "true"


@pytest.mark.parametrize("ref", ["main", "v2"])
def test_branch_and_tag(repo: Path, tmp_path: Path, ref: str) -> None:
    result = checkout(repo.as_uri(), ref=ref, workspace=tmp_path / "ws")
    assert result.sha == git("rev-parse", "HEAD", cwd=repo)


def test_exact_older_sha(repo: Path, tmp_path: Path) -> None:
    first = git("rev-parse", "HEAD~1", cwd=repo)
    result = checkout(str(repo), ref=first, workspace=tmp_path / "ws")
    assert result.sha == first
    assert (tmp_path / "ws" / "VERSION").read_text() == "1"


def test_workspace_with_the_sha_is_reused_and_another_is_replaced(repo: Path, tmp_path: Path) -> None:
    sha = git("rev-parse", "HEAD", cwd=repo)
    workspace = tmp_path / "ws"
    checkout(str(repo), ref=sha, workspace=workspace)
    (workspace / "build-output").write_text("kept on a retry")
    checkout(str(repo), ref=sha, workspace=workspace)
    assert (workspace / "build-output").exists()
    checkout(str(repo), ref=git("rev-parse", "HEAD~1", cwd=repo), workspace=workspace)
    assert not (workspace / "build-output").exists()


@pytest.mark.parametrize("ref", ["no-such-branch", "0123456789012345678901234567890123456789"])
def test_missing_ref_is_a_permanent_clear_error(repo: Path, tmp_path: Path, ref: str) -> None:
    with pytest.raises(CheckoutError) as caught:
        checkout(str(repo), ref=ref, workspace=tmp_path / "ws")
    assert caught.value.message.startswith("ref not found")
    assert not caught.value.transient


@pytest.mark.parametrize("ref", ["--upload-pack=touch /tmp/x", "a..b", "main; rm -rf /", ""])
def test_hostile_refs_are_rejected_before_git_runs(repo: Path, tmp_path: Path, ref: str) -> None:
    with pytest.raises(CheckoutError, match="invalid ref"):
        checkout(str(repo), ref=ref or "-", workspace=tmp_path / "ws")
    assert not (tmp_path / "ws").exists()


def test_source_that_is_not_a_repository_location(tmp_path: Path) -> None:
    with pytest.raises(CheckoutError, match="neither a directory nor"):
        source_url(str(tmp_path / "missing"))
    with pytest.raises(CheckoutError, match="neither a directory nor"):
        source_url("ssh://git@example.invalid/app.git")


class _DenyingGitServer(BaseHTTPRequestHandler):
    authorizations: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).authorizations.append(self.headers.get("Authorization", ""))
        self.send_response(403)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Keep the test output free of request logs."""


@pytest.fixture
def denying_server() -> Iterator[str]:
    _DenyingGitServer.authorizations = []
    server = HTTPServer(("127.0.0.1", 0), _DenyingGitServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/group/app.git"
    server.shutdown()


def test_token_goes_in_a_header_and_never_to_disk(denying_server: str, tmp_path: Path) -> None:
    with pytest.raises(CheckoutError, match="access denied"):
        checkout(denying_server, ref="main", workspace=tmp_path / "ws", token=SecretStr("s3cr3t-token"))
    # base64("oauth2:s3cr3t-token")
    assert "Basic b2F1dGgyOnMzY3IzdC10b2tlbg==" in _DenyingGitServer.authorizations
    for path in (tmp_path / "ws").rglob("*"):
        if path.is_file():
            assert b"s3cr3t" not in path.read_bytes() and b"b2F1dGgy" not in path.read_bytes(), path


def test_task_reports_a_missing_ref(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPLINE_HOME", str(tmp_path / "home"))
    with disable_run_logger(), pytest.raises(CheckoutError, match="ref not found"):
        checkout_source.fn(str(repo), "nope")


class _FailedState:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def result(self) -> None:
        raise self.error


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (CheckoutError("ref not found: nope"), False),
        (CheckoutError("git fetch failed: connection reset", transient=True), True),
        (ConnectionResetError("peer went away"), True),
    ],
)
def test_retries_only_transient_failures(error: Exception, retried: bool) -> None:
    assert retry_if_transient(None, None, _FailedState(error)) is retried


def test_a_private_repository_over_https_needs_the_token_and_it_never_reaches_disk(
    repo: Path, tmp_path: Path
) -> None:
    """GitLab smart HTTP (the fake runs `git http-backend`): only with the token does the commit come."""
    from tests.fake_gitlab import FakeGitLab

    bare = tmp_path / "served.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(bare)], check=True)
    with FakeGitLab(token="glpat-only-this-one") as gitlab:
        gitlab.add_project(
            "group/app", branches={"main": git("rev-parse", "main", cwd=repo)}, serve=str(bare)
        )
        url = f"{gitlab.url}/group/app.git"
        with pytest.raises(CheckoutError):
            checkout(url, ref="main", workspace=tmp_path / "denied", token=SecretStr("wrong"))
        done = checkout(url, ref="v2", workspace=tmp_path / "ws", token=SecretStr("glpat-only-this-one"))
    assert done.sha == git("rev-parse", "v2^{commit}", cwd=repo)
    assert (done.workspace / "VERSION").read_text() == "2"
    for path in (tmp_path / "ws").rglob("*"):
        if path.is_file():
            assert b"glpat-only-this-one" not in path.read_bytes(), path


def test_a_junit_path_through_a_link_out_of_the_workspace_touches_nothing(tmp_path: Path) -> None:
    """A repository with ``reports -> <a host directory>`` and ``junit: reports/passwd``: the stale-report
    clean-up must not delete the host's file, and the report must not be read from there."""
    from shipline.errors import BuildError
    from shipline.files import inside

    host = tmp_path / "host-etc"
    host.mkdir()
    (host / "passwd").write_text("root:x:0:0\n")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "reports").symlink_to(host)
    (workspace / "ok").mkdir()
    (workspace / "ok" / "inner").symlink_to(workspace / "ok")  # a link that stays inside is fine
    with pytest.raises(BuildError, match=r"test\.junit reports/passwd leads out of the workspace"):
        inside(workspace, "reports/passwd", what="test.junit")
    assert (host / "passwd").read_text() == "root:x:0:0\n"
    assert inside(workspace, "ok/inner/junit.xml", what="test.junit") == workspace / "ok/inner/junit.xml"
