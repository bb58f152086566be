"""GitLabProject through the real python-gitlab client, against the fake GitLab of tests/fake_gitlab.py."""

from __future__ import annotations

import socket

import gitlab
import pytest
from pydantic import SecretStr

from shipline.errors import NotifyError
from shipline.gitlab.api import CONFLICT_BACKOFF, GitLabProject, StatusState, token_may_go_to
from tests.fake_gitlab import FakeGitLab

PATH = "group/app"
SHA = "0123456789abcdef0123456789abcdef01234567"
NEXT_SHA = "89abcdef0123456789abcdef0123456789abcdef"
RUN = "http://127.0.0.1:4200/runs/flow-run/1"
SECRET = SecretStr("hook-secret")


class Sleeps:
    """A ``sleep`` that records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def project(fake_gitlab: FakeGitLab, sleeps: Sleeps) -> GitLabProject:
    fake_gitlab.add_project(PATH, branches={"main": SHA})
    client = gitlab.Gitlab(fake_gitlab.url, private_token=fake_gitlab.token, timeout=5)
    return GitLabProject(client, PATH, sleep=sleeps)


def test_connect_makes_no_request(fake_gitlab: FakeGitLab) -> None:
    fake_gitlab.add_project(PATH, branches={"main": SHA})
    GitLabProject.connect(fake_gitlab.url, SecretStr(fake_gitlab.token), PATH)
    assert fake_gitlab.requests == []


@pytest.mark.parametrize("state", ["pending", "running", "success", "failed", "canceled"])
def test_a_status_is_recorded_with_its_link_in_one_request(
    fake_gitlab: FakeGitLab, project: GitLabProject, state: StatusState
) -> None:
    project.set_commit_status(SHA, name="shipline/build", state=state, target_url=RUN, description="x" * 200)

    (post,) = fake_gitlab.project(PATH).statuses[SHA]
    assert post == ("shipline/build", state, RUN, "x" * 140)
    # lazy project and commit: the path is URL-encoded and nothing is read first
    assert fake_gitlab.requests == [("POST", f"/api/v4/projects/group%2Fapp/statuses/{SHA}")]


def test_a_status_follows_its_run(fake_gitlab: FakeGitLab, project: GitLabProject) -> None:
    for state in ("pending", "running", "success"):
        project.set_commit_status(SHA, name="shipline/build", state=state, target_url=RUN)
    project.set_commit_status(SHA, name="shipline/scan", state="failed", target_url=RUN)

    assert fake_gitlab.status_history(PATH, SHA, "shipline/build") == ["pending", "running", "success"]
    assert fake_gitlab.status_history(PATH, SHA, "shipline/scan") == ["failed"]


@pytest.mark.parametrize("state", ["pending", "running"])
def test_a_repeated_state_is_done_and_records_nothing(
    fake_gitlab: FakeGitLab, project: GitLabProject, state: StatusState
) -> None:
    project.set_commit_status(SHA, name="shipline/build", state=state)
    project.set_commit_status(SHA, name="shipline/build", state=state)

    assert fake_gitlab.status_history(PATH, SHA, "shipline/build") == [state]
    assert len(fake_gitlab.requests) == 2  # the second was sent and refused with a 400, not retried


def test_a_late_pending_leaves_a_running_status_alone(
    fake_gitlab: FakeGitLab, project: GitLabProject
) -> None:
    project.set_commit_status(SHA, name="shipline/build", state="running")
    project.set_commit_status(SHA, name="shipline/build", state="pending")

    assert fake_gitlab.status_history(PATH, SHA, "shipline/build") == ["running"]


def test_an_invalid_state_is_a_permanent_error(fake_gitlab: FakeGitLab, project: GitLabProject) -> None:
    with pytest.raises(NotifyError, match="400") as caught:
        project.set_commit_status(SHA, name="shipline/build", state="queued")  # type: ignore[arg-type]
    assert not caught.value.transient
    assert "state does not have a valid value" in caught.value.message


def test_conflicts_are_retried_with_backoff(
    fake_gitlab: FakeGitLab, project: GitLabProject, sleeps: Sleeps
) -> None:
    fake_gitlab.conflicts(PATH, 2)

    project.set_commit_status(SHA, name="shipline/build", state="running", target_url=RUN)

    assert fake_gitlab.status_history(PATH, SHA, "shipline/build") == ["running"]
    assert sleeps.delays == [0.5, 1.0]
    assert len(fake_gitlab.requests) == 3


def test_endless_conflicts_are_a_transient_error(
    fake_gitlab: FakeGitLab, project: GitLabProject, sleeps: Sleeps
) -> None:
    fake_gitlab.conflicts(PATH, 100)

    with pytest.raises(NotifyError) as caught:
        project.set_commit_status(SHA, name="shipline/build", state="running")

    assert caught.value.transient
    assert "409" in caught.value.message and "in progress" in caught.value.message
    assert sleeps.delays == list(CONFLICT_BACKOFF)
    assert len(fake_gitlab.requests) == len(CONFLICT_BACKOFF) + 1
    assert fake_gitlab.status_history(PATH, SHA, "shipline/build") == []


def test_a_wrong_token_is_a_permanent_401(fake_gitlab: FakeGitLab) -> None:
    fake_gitlab.add_project(PATH, branches={"main": SHA})
    project = GitLabProject.connect(fake_gitlab.url, SecretStr("glpat-wrong"), PATH)

    with pytest.raises(NotifyError) as caught:
        project.set_commit_status(SHA, name="shipline/build", state="running")

    error = caught.value
    assert not error.transient
    assert "401" in error.message and "Unauthorized" in error.message
    assert fake_gitlab.url in error.message and PATH in error.message and "shipline/build" in error.message
    assert error.hint and "token" in error.hint
    assert "glpat-wrong" not in error.message
    assert fake_gitlab.status_history(PATH, SHA, "shipline/build") == []


def test_a_failing_gitlab_is_transient(fake_gitlab: FakeGitLab, project: GitLabProject) -> None:
    fake_gitlab.broken = True

    with pytest.raises(NotifyError, match="500") as caught:
        project.comment_on_commit(SHA, "released")
    assert caught.value.transient

    with pytest.raises(NotifyError, match="500") as caught:
        project.branch_head("main")
    assert caught.value.transient


def test_an_unreachable_gitlab_is_transient() -> None:
    with socket.socket() as closed:  # a port that nothing listens on
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    project = GitLabProject.connect(url, SecretStr("t"), PATH, timeout=2)

    with pytest.raises(NotifyError, match="no answer") as caught:
        project.set_commit_status(SHA, name="shipline/build", state="running")

    assert caught.value.transient
    assert url in caught.value.message


def test_an_unknown_project_is_a_404(fake_gitlab: FakeGitLab) -> None:
    project = GitLabProject.connect(fake_gitlab.url, SecretStr(fake_gitlab.token), "group/missing")

    with pytest.raises(NotifyError) as caught:
        project.set_commit_status(SHA, name="shipline/build", state="running")

    assert "404 Project Not Found" in caught.value.message and "group/missing" in caught.value.message
    assert not caught.value.transient


def test_a_numeric_project_id_works(fake_gitlab: FakeGitLab) -> None:
    project_id = fake_gitlab.add_project(PATH, branches={"main": SHA})
    project = GitLabProject.connect(fake_gitlab.url, SecretStr(fake_gitlab.token), str(project_id))

    project.set_commit_status(SHA, name="shipline/build", state="success")

    assert fake_gitlab.status_history(PATH, SHA, "shipline/build") == ["success"]


def test_a_comment_is_recorded(fake_gitlab: FakeGitLab, project: GitLabProject) -> None:
    project.comment_on_commit(SHA, "**app released in prod**")

    assert fake_gitlab.comments(PATH, SHA) == ["**app released in prod**"]
    assert fake_gitlab.requests == [
        ("POST", f"/api/v4/projects/group%2Fapp/repository/commits/{SHA}/comments")
    ]


def test_a_comment_on_an_unknown_commit_is_a_404(fake_gitlab: FakeGitLab, project: GitLabProject) -> None:
    with pytest.raises(NotifyError, match="404 Commit Not Found"):
        project.comment_on_commit("f" * 40, "released")


def test_branch_head_follows_the_branch(fake_gitlab: FakeGitLab, project: GitLabProject) -> None:
    assert project.branch_head("main") == SHA

    fake_gitlab.advance_branch(PATH, "main", NEXT_SHA)
    fake_gitlab.advance_branch(PATH, "feature/x", SHA)

    assert project.branch_head("main") == NEXT_SHA
    assert project.branch_head("feature/x") == SHA


def test_a_missing_branch_is_a_404(project: GitLabProject) -> None:
    with pytest.raises(NotifyError) as caught:
        project.branch_head("gone")

    assert "404 Branch Not Found" in caught.value.message and "gone" in caught.value.message
    assert not caught.value.transient


def test_ensure_webhook_creates_then_updates_the_same_hook(
    fake_gitlab: FakeGitLab, project: GitLabProject
) -> None:
    url = "http://127.0.0.1:8080/webhooks/gitlab"
    other_id = fake_gitlab.add_hook(PATH, "http://127.0.0.1:9000/elsewhere", token="theirs")
    other = fake_gitlab.hooks(PATH)[0]

    assert project.ensure_webhook(url, secret=SECRET) == "created"
    (_, hook) = fake_gitlab.hooks(PATH)
    assert hook["url"] == url and hook["token"] == "hook-secret"
    assert hook["push_events"] and hook["tag_push_events"] and hook["merge_requests_events"]
    assert hook["enable_ssl_verification"] is False  # an http URL cannot be verified

    # someone turns tag pushes off, and the secret is rotated: the same hook is brought back
    fake_gitlab.edit_hook(PATH, hook["id"], tag_push_events=False)
    assert project.ensure_webhook(url, secret=SecretStr("rotated")) == "updated"

    (untouched, updated) = fake_gitlab.hooks(PATH)
    assert untouched == other and untouched["id"] == other_id
    assert updated["id"] == hook["id"] and updated["tag_push_events"] and updated["token"] == "rotated"

    # nothing visible differs: the token is sent again anyway, as GitLab does not show it
    assert project.ensure_webhook(url, secret=SecretStr("rotated")) == "updated"
    assert fake_gitlab.requests[-1][0] == "PUT" and len(fake_gitlab.hooks(PATH)) == 2


def test_ensure_webhook_verifies_ssl_for_https(fake_gitlab: FakeGitLab, project: GitLabProject) -> None:
    assert project.ensure_webhook("https://shipline.example.com/webhooks/gitlab", secret=SECRET) == "created"

    (hook,) = fake_gitlab.hooks(PATH)
    assert hook["enable_ssl_verification"] is True


@pytest.mark.parametrize(
    ("source", "goes"),
    [
        ("https://gitlab.example.com/group/app.git", True),
        ("https://GitLab.example.com:443/group/app.git", True),
        ("http://gitlab.example.com/group/app.git", False),  # plain http off loopback: never
        ("https://attacker.example.com/x.git", False),  # a source elsewhere gets no token
        ("https://gitlab.example.com:8443/group/app.git", False),  # another port is another server
        ("file:///srv/git/app.git", False),
        ("/srv/git/app.git", False),
    ],
)
def test_the_token_goes_only_to_the_gitlab_it_belongs_to(source: str, goes: bool) -> None:
    assert token_may_go_to(source, "https://gitlab.example.com") is goes


def test_plain_http_is_allowed_on_loopback_only() -> None:
    assert token_may_go_to("http://127.0.0.1:8929/group/app.git", "http://127.0.0.1:8929")
    assert not token_may_go_to("http://127.0.0.1:8930/group/app.git", "http://127.0.0.1:8929")
