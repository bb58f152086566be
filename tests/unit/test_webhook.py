"""``POST /hooks/gitlab`` and ``GET /healthz`` of ``shipline web`` (shared/DESIGN.md §3, Webhook).

The app runs in-process with fakes for what it reaches: a webhook secret, onboarded apps and a starter
that answers like Prefect's idempotent ``create_flow_run``. GitLab's requests are its documented examples
(``tests/gitlab_payloads.py``). Body limits and timeouts are driven through the ASGI interface directly,
where the test controls when and how much of the body arrives.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.types import Message, Receive

import shipline.web.app as web_app
from shipline.apps import OnboardedApp
from shipline.errors import ServiceUnavailableError
from shipline.gitlab.events import Trigger, idempotency_key
from shipline.gitlab.triggers import StartedRun, run_parameters
from shipline.web.app import MAX_BODY, Cached, create_app
from tests import gitlab_payloads as gl
from tests.waiting import eventually, eventually_async

with warnings.catch_warnings():
    # Starlette 1.x would rather drive its TestClient with httpx2; the project pins httpx (Prefect uses
    # it), which the TestClient still supports. Not a problem of the code under test.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

SECRET = "hook-secret"
UI = "http://127.0.0.1:4200"
SHA = "1234567890abcdef1234567890abcdef12345678"
OTHER_SHA = "fedcba0987654321fedcba0987654321fedcba09"

# The onboarded apps of the projects GitLab's documented examples come from.
DIASPORA = OnboardedApp(
    app="diaspora",
    repository="http://example.com/mike/diaspora.git",
    project="mike/diaspora",
    branch="master",
)
EXAMPLE = OnboardedApp(
    app="example", repository="http://example.com/jsmith/example.git", project="jsmith/example"
)
GITLAB_TEST = OnboardedApp(
    app="gitlab-test",
    repository="http://example.com/gitlabhq/gitlab-test.git",
    project="gitlabhq/gitlab-test",
)
ONBOARDED = (DIASPORA, EXAMPLE, GITLAB_TEST)


@dataclass(frozen=True)
class Started:
    """One ``start`` call of the fake starter, with what the real one would send to Prefect."""

    trigger: Trigger
    app: OnboardedApp
    delivery_id: str | None
    key: str
    parameters: dict[str, Any]
    run: StartedRun


class FakeStarter:
    """Records ``start`` calls and answers like Prefect's ``create_flow_run`` with an idempotency key:
    a new key creates a run (``created=True``), a key seen before answers that run (``created=False``)."""

    def __init__(self) -> None:
        self.calls: list[Started] = []
        self.runs: dict[str, StartedRun] = {}

    async def start(self, trigger: Trigger, app: OnboardedApp, *, delivery_id: str | None) -> StartedRun:
        key = idempotency_key(trigger, delivery_id=delivery_id)
        earlier = self.runs.get(key)
        if earlier is None:
            run = self.runs[key] = StartedRun(id=uuid4(), name=f"delivery-{len(self.runs) + 1}", created=True)
        else:
            run = earlier.model_copy(update={"created": False})
        self.calls.append(Started(trigger, app, delivery_id, key, run_parameters(trigger, app), run))
        return run


class Apps:
    """The onboarded apps, found by GitLab project path (case-insensitively, as ``shipline web`` does)."""

    def __init__(self, *apps: OnboardedApp) -> None:
        self.apps = apps
        self.lookups: list[str] = []

    async def __call__(self, project: str) -> OnboardedApp | None:
        self.lookups.append(project)
        return next((a for a in self.apps if a.project and a.project.lower() == project.lower()), None)


class Secret:
    """The webhook secret an operator saved (None: none), and how often it was read."""

    def __init__(self, value: str | None = SECRET) -> None:
        self.value = value
        self.reads = 0

    async def __call__(self) -> str | None:
        self.reads += 1
        return self.value


@pytest.fixture
def starter() -> FakeStarter:
    return FakeStarter()


@pytest.fixture
def apps() -> Apps:
    return Apps(*ONBOARDED)


@pytest.fixture
def secret() -> Secret:
    return Secret()


@pytest.fixture
def asgi(starter: FakeStarter, apps: Apps, secret: Secret) -> Starlette:
    # seconds=0: every request reads the secret again, so a test can change it between two requests.
    return create_app(secret=Cached(secret, seconds=0), apps=apps, starter=starter, ui_url=UI)


@pytest.fixture
def client(asgi: Starlette) -> Iterator[TestClient]:
    with TestClient(asgi) as test_client:
        yield test_client


def deliver(
    client: TestClient,
    event: str,
    payload: object,
    *,
    token: str | None = SECRET,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST ``payload`` as GitLab sends an ``event`` hook (fresh delivery ids unless ``headers`` given)."""
    sent = gl.headers(event, token) if headers is None else headers
    return client.post("/hooks/gitlab", content=gl.body(payload), headers=sent)


def without(payload: dict[str, Any], path: str) -> dict[str, Any]:
    """``payload`` without the field at dotted ``path``."""
    copied: dict[str, Any] = json.loads(json.dumps(payload))
    *parents, last = path.split(".")
    node = copied
    for part in parents:
        node = node[part]
    del node[last]
    return copied


def replaced(payload: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """``payload`` with the field at dotted ``path`` set to ``value``."""
    copied: dict[str, Any] = json.loads(json.dumps(payload))
    *parents, last = path.split(".")
    node = copied
    for part in parents:
        node = node[part]
    node[last] = value
    return copied


# --- what an event starts ---------------------------------------------------------------------------


def test_a_push_to_the_delivery_branch_starts_a_delivery_of_its_checkout_sha(
    client: TestClient, starter: FakeStarter
) -> None:
    """GitLab's documented push to ``master`` delivers the app at ``checkout_sha`` from its repository,
    and the answer is 202 with the run's id and its link in Prefect's UI."""
    response = deliver(client, "Push Hook", gl.PUSH)

    assert response.status_code == 202
    (call,) = starter.calls
    assert call.app == DIASPORA
    assert (call.trigger.kind, call.trigger.project, call.trigger.ref) == ("push", "mike/diaspora", "master")
    assert call.trigger.sha == gl.PUSH["checkout_sha"]
    assert call.parameters == {"source": DIASPORA.repository, "ref": gl.PUSH["checkout_sha"]}
    answer = response.json()
    assert answer["started"] is True
    assert answer["flow_run_id"] == str(call.run.id)
    assert answer["url"] == f"{UI}/runs/flow-run/{call.run.id}"
    assert answer["sha"] == gl.PUSH["checkout_sha"]


def test_an_annotated_tag_delivers_the_commit_not_the_tag_object(
    client: TestClient, starter: FakeStarter
) -> None:
    """For an annotated tag ``after`` is the tag object: the delivery is of ``checkout_sha``, the commit."""
    assert gl.TAG_PUSH["after"] != gl.TAG_PUSH["checkout_sha"]

    response = deliver(client, "Tag Push Hook", gl.TAG_PUSH)

    assert response.status_code == 202
    (call,) = starter.calls
    assert (call.trigger.kind, call.trigger.ref, call.app) == ("tag", "v1.0.0", EXAMPLE)
    assert call.trigger.sha == gl.TAG_PUSH["checkout_sha"]
    assert call.parameters["ref"] == gl.TAG_PUSH["checkout_sha"]
    assert gl.TAG_OBJECT not in call.key


@pytest.mark.parametrize(
    ("action", "oldrev"),
    [("open", None), ("reopen", None), ("update", "a" * 40)],
    ids=["open", "reopen", "update-with-new-commits"],
)
def test_a_merge_request_with_new_commits_runs_the_build_stages_only_on_its_last_commit(
    client: TestClient, starter: FakeStarter, action: str, oldrev: str | None
) -> None:
    """A merge request opened, reopened or updated with commits builds its last commit and releases
    nothing: the delivery's ``environments`` is empty."""
    payload = gl.merge_request(action=action, oldrev=oldrev, iid=7)
    last_commit = gl.MERGE_REQUEST["object_attributes"]["last_commit"]["id"]

    response = deliver(client, "Merge Request Hook", payload)

    assert response.status_code == 202
    (call,) = starter.calls
    assert call.app == GITLAB_TEST
    assert (call.trigger.kind, call.trigger.ref, call.trigger.build_only) == (
        "merge-request",
        "merge-requests/7",
        True,
    )
    assert call.parameters == {"source": GITLAB_TEST.repository, "ref": last_commit, "environments": []}


@pytest.mark.parametrize(
    ("event", "payload", "reason"),
    [
        ("Push Hook", gl.push(branch="feature"), "'feature'"),
        ("Push Hook", gl.push(sha=gl.ZERO_SHA), "deleted"),
        ("Tag Push Hook", gl.tag_push(sha=gl.ZERO_SHA), "deleted"),
        ("Push Hook", gl.push(project="someone/else"), "someone/else"),
        ("Merge Request Hook", gl.merge_request(project="someone/else"), "someone/else"),
        ("Merge Request Hook", gl.merge_request(action="approved"), "'approved'"),
        ("Merge Request Hook", gl.merge_request(action="update"), "'update'"),
        ("Merge Request Hook", gl.merge_request(action="close"), "'close'"),
    ],
    ids=[
        "push-to-another-branch",
        "branch-deletion",
        "tag-deletion",
        "push-unknown-project",
        "mr-unknown-project",
        "mr-approved",
        "mr-update-without-oldrev",
        "mr-close",
    ],
)
def test_an_event_that_starts_nothing_is_answered_2xx_with_a_reason(
    client: TestClient, starter: FakeStarter, event: str, payload: dict[str, Any], reason: str
) -> None:
    """Events Shipline does not act on are accepted (GitLab disables hooks that keep failing), say why,
    and start nothing."""
    response = deliver(client, event, payload)

    assert 200 <= response.status_code < 300
    answer = response.json()
    assert answer["started"] is False
    assert reason in answer["reason"]
    assert starter.calls == []


def test_a_prefect_that_does_not_answer_is_a_503_gitlab_can_retry(apps: Apps, secret: Secret) -> None:
    """When the run cannot be created the hook fails with 503 (not a crash), so that GitLab shows the
    delivery as failed and it can be resent."""

    class Down:
        async def start(self, trigger: Trigger, app: OnboardedApp, *, delivery_id: str | None) -> StartedRun:
            raise ServiceUnavailableError(
                "Prefect at http://127.0.0.1:4200/api does not answer: ConnectError"
            )

    app = create_app(secret=Cached(secret, seconds=0), apps=apps, starter=Down(), ui_url=UI)
    with TestClient(app) as down_client:
        response = deliver(down_client, "Push Hook", gl.PUSH)

    assert response.status_code == 503
    assert "does not answer" in response.json()["error"]


# --- redeliveries -------------------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["idempotency-key", "event-uuid-only"])
def test_a_redelivery_answers_200_with_the_same_run(
    client: TestClient, starter: FakeStarter, by: str
) -> None:
    """GitLab resending an event (same ``Idempotency-Key``; or, from a GitLab before 17.4, same
    ``X-Gitlab-Event-UUID``) starts nothing new: 202 first, then 200 with the same run."""
    first = gl.headers("Push Hook", SECRET)
    if by == "idempotency-key":
        # A resend keeps the Idempotency-Key; the other ids may differ, the key is what counts.
        again = gl.headers("Push Hook", SECRET, idempotency_key=first["Idempotency-Key"])
    else:
        del first["Idempotency-Key"]
        again = gl.headers("Push Hook", SECRET, uuid=first["X-Gitlab-Event-UUID"])
        del again["Idempotency-Key"]

    created = deliver(client, "Push Hook", gl.PUSH, headers=first)
    redelivered = deliver(client, "Push Hook", gl.PUSH, headers=again)

    assert (created.status_code, redelivered.status_code) == (202, 200)
    assert redelivered.json()["flow_run_id"] == created.json()["flow_run_id"]
    assert redelivered.json()["url"] == created.json()["url"]
    assert redelivered.json()["started"] is False
    assert len(starter.runs) == 1


def test_the_webhook_uuid_is_never_the_key(client: TestClient, starter: FakeStarter) -> None:
    """``X-Gitlab-Webhook-UUID`` is new on every request: a redelivery that differs only by it is the same
    run, and it never becomes the delivery id, even when GitLab sends no other id."""
    first = gl.headers("Push Hook", SECRET)
    again = gl.headers(
        "Push Hook", SECRET, uuid=first["X-Gitlab-Event-UUID"], idempotency_key=first["Idempotency-Key"]
    )
    assert again["X-Gitlab-Webhook-UUID"] != first["X-Gitlab-Webhook-UUID"]

    assert deliver(client, "Push Hook", gl.PUSH, headers=first).status_code == 202
    assert deliver(client, "Push Hook", gl.PUSH, headers=again).status_code == 200

    bare = [gl.headers("Push Hook", SECRET) for _ in range(2)]
    for sent in bare:
        del sent["Idempotency-Key"], sent["X-Gitlab-Event-UUID"]
    other = gl.push(sha=OTHER_SHA)
    answers = [deliver(client, "Push Hook", other, headers=sent) for sent in bare]

    assert [a.status_code for a in answers] == [202, 200]
    assert answers[0].json()["flow_run_id"] == answers[1].json()["flow_run_id"]
    assert [c.delivery_id for c in starter.calls] == [first["Idempotency-Key"]] * 2 + [None, None]
    webhook_uuids = {first["X-Gitlab-Webhook-UUID"], again["X-Gitlab-Webhook-UUID"]}
    webhook_uuids |= {sent["X-Gitlab-Webhook-UUID"] for sent in bare}
    assert not any(uuid in call.key for call in starter.calls for uuid in webhook_uuids)


def test_the_key_includes_project_sha_and_event_kind(client: TestClient, starter: FakeStarter) -> None:
    """One delivery id for different commits, projects or event kinds still makes different runs: the
    key always holds the project, the sha and the kind besides GitLab's id."""
    delivery = {"uuid": str(uuid4()), "idempotency_key": str(uuid4())}
    events = [
        ("Push Hook", gl.push(sha=SHA)),
        ("Push Hook", gl.push(sha=OTHER_SHA)),
        ("Push Hook", gl.push(project="jsmith/example", branch="main", sha=SHA)),
        ("Merge Request Hook", gl.merge_request(project="mike/diaspora", sha=SHA)),
        ("Tag Push Hook", gl.tag_push(project="mike/diaspora", sha=SHA)),
    ]

    answers = [
        deliver(client, event, payload, headers=gl.headers(event, SECRET, **delivery))
        for event, payload in events
    ]

    assert [a.status_code for a in answers] == [202] * len(events)
    assert len({a.json()["flow_run_id"] for a in answers}) == len(events)
    for call in starter.calls:
        assert call.delivery_id == delivery["idempotency_key"]
        for part in (call.trigger.project, call.trigger.sha, call.trigger.kind, delivery["idempotency_key"]):
            assert part in call.key


# --- who may call -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token", [None, "", "wrong", SECRET + "x", SECRET[:-1], SECRET.upper(), f" {SECRET}"], ids=repr
)
def test_a_missing_or_wrong_token_is_a_401_and_starts_nothing(
    client: TestClient, starter: FakeStarter, apps: Apps, token: str | None
) -> None:
    """Only the exact secret opens the hook; nothing about the event is even looked up otherwise."""
    response = deliver(client, "Push Hook", gl.PUSH, token=token)

    assert response.status_code == 401
    assert "X-Gitlab-Token" in response.json()["error"]
    assert starter.calls == []
    assert apps.lookups == []


@pytest.mark.parametrize("token", [None, "", "anything"], ids=repr)
def test_without_a_configured_secret_every_hook_is_refused(
    client: TestClient, starter: FakeStarter, secret: Secret, token: str | None
) -> None:
    """No secret saved (the block has none): even an empty or absent token does not match it."""
    secret.value = None

    assert deliver(client, "Push Hook", gl.PUSH, token=token).status_code == 401
    secret.value = ""
    assert deliver(client, "Push Hook", gl.PUSH, token=token).status_code == 401
    assert starter.calls == []


def test_a_changed_secret_takes_effect_without_a_restart(
    client: TestClient, starter: FakeStarter, secret: Secret
) -> None:
    """The secret is read again: after an operator rotates it the new token is accepted and the old one
    refused, by the same running app (a hook that arrives while the new secret is being read is judged by
    the old one)."""
    assert deliver(client, "Push Hook", gl.push(sha=SHA)).status_code == 202

    secret.value = "rotated-secret"

    eventually(
        lambda: (
            deliver(client, "Push Hook", gl.push(sha=OTHER_SHA), token="rotated-secret").status_code == 202
        ),
        timeout=5,
        what="the rotated secret to be accepted",
    )
    assert deliver(client, "Push Hook", gl.push(sha=OTHER_SHA)).status_code == 401
    assert [c.trigger.sha for c in starter.calls] == [SHA, OTHER_SHA]


async def test_cached_reads_at_most_once_per_period_and_shares_a_read() -> None:
    """``Cached``: calls within its period, even concurrent ones, share one read, so a burst of hooks
    reads the GitLab block once; the period is a second unless told otherwise."""
    secret = Secret()

    async def slow() -> str | None:
        await asyncio.sleep(0.01)  # concurrent callers arrive while the read is under way
        return await secret()

    # A long period, so that a slow machine cannot let it run out between the calls.
    cached = Cached(slow, seconds=60)

    values = await asyncio.gather(*(cached() for _ in range(5)))
    secret.value = "rotated-secret"

    assert values == [SECRET] * 5
    assert await cached() == SECRET  # within the period: still the value read
    assert secret.reads == 1
    assert Cached(slow).seconds == 1.0


async def test_a_stale_value_is_served_at_once_and_read_again_behind() -> None:
    """``Cached``: once its period is over, a call still gets the value at hand at once (a slow read never
    holds up a hook) and starts a read in the background; the next calls see the new value."""
    secret = Secret()
    cached = Cached(secret, seconds=0)

    assert await cached() == SECRET
    secret.value = "rotated-secret"
    assert await cached() == SECRET  # served at once; the read it started runs behind

    async def rotated() -> bool:
        return await cached() == "rotated-secret"

    assert await eventually_async(rotated, timeout=2, what="the new secret after the background read")


async def test_a_failing_read_keeps_the_last_value() -> None:
    """A background read that fails (the Prefect server restarting) leaves the last good value in use."""
    values = iter(["first"])

    async def flaky() -> str:
        try:
            return next(values)
        except StopIteration:
            raise RuntimeError("the block cannot be read") from None

    cached = Cached(flaky, seconds=0)
    assert await cached() == "first"
    for _ in range(3):
        assert await cached() == "first"
        await asyncio.sleep(0.01)


# --- malformed requests -------------------------------------------------------------------------------


@pytest.mark.parametrize("event", ["Issue Hook", "System Hook", "push hook", "Push Hook ", "Pipeline Hook"])
def test_an_unknown_event_is_a_400_naming_it(client: TestClient, starter: FakeStarter, event: str) -> None:
    """Shipline takes Push, Tag Push and Merge Request Hooks only; another event is refused by name."""
    response = deliver(client, event, gl.PUSH)

    assert response.status_code == 400
    assert repr(event) in response.json()["error"]
    assert starter.calls == []


def test_a_missing_event_header_is_a_400(client: TestClient, starter: FakeStarter) -> None:
    """Without ``X-Gitlab-Event`` the payload cannot be read: refused, naming the header."""
    sent = gl.headers("Push Hook", SECRET)
    del sent["X-Gitlab-Event"]

    response = client.post("/hooks/gitlab", content=gl.body(gl.PUSH), headers=sent)

    assert response.status_code == 400
    assert "X-Gitlab-Event" in response.json()["error"]
    assert starter.calls == []


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"\xff\xfe\x00garbage", gl.body(gl.PUSH)[:-1], b"{'ref': 'refs/heads/master'}"],
    ids=["empty", "text", "binary", "truncated", "python-literal"],
)
def test_a_body_that_is_not_json_is_a_400(client: TestClient, starter: FakeStarter, body: bytes) -> None:
    """A body that does not parse is refused as such."""
    response = client.post("/hooks/gitlab", content=body, headers=gl.headers("Push Hook", SECRET))

    assert response.status_code == 400
    assert response.json() == {"error": "the body is not JSON"}
    assert starter.calls == []


def test_deeply_nested_json_is_a_400_not_a_crash(client: TestClient, starter: FakeStarter) -> None:
    """100 kB of ``[`` (well under the size limit, far deeper than ``json`` parses) are bad input, not a
    server error: ``json.loads`` raises RecursionError, not ValueError, for it."""
    response = client.post("/hooks/gitlab", content=b"[" * 100_000, headers=gl.headers("Push Hook", SECRET))

    assert response.status_code == 400
    assert response.json() == {"error": "the body is not JSON"}
    assert starter.calls == []


@pytest.mark.parametrize(
    ("event", "payload", "field"),
    [
        ("Push Hook", without(gl.PUSH, "checkout_sha"), "checkout_sha"),
        ("Push Hook", without(gl.PUSH, "after"), "after"),
        ("Push Hook", without(gl.PUSH, "ref"), "ref"),
        ("Push Hook", without(gl.PUSH, "project"), "project"),
        ("Push Hook", without(gl.PUSH, "project.path_with_namespace"), "project.path_with_namespace"),
        ("Tag Push Hook", without(gl.TAG_PUSH, "checkout_sha"), "checkout_sha"),
        ("Merge Request Hook", without(gl.MERGE_REQUEST, "object_attributes"), "object_attributes"),
        ("Merge Request Hook", without(gl.MERGE_REQUEST, "object_attributes.iid"), "object_attributes.iid"),
        (
            "Merge Request Hook",
            without(gl.MERGE_REQUEST, "object_attributes.last_commit.id"),
            "object_attributes.last_commit.id",
        ),
    ],
    ids=[
        "checkout_sha",
        "after",
        "ref",
        "project",
        "path_with_namespace",
        "tag-checkout_sha",
        "object_attributes",
        "iid",
        "last_commit.id",
    ],
)
def test_a_missing_field_is_a_400_naming_it(
    client: TestClient, starter: FakeStarter, event: str, payload: dict[str, Any], field: str
) -> None:
    """A payload without a field Shipline reads is refused with the field's dotted path."""
    response = deliver(client, event, payload)

    assert response.status_code == 400
    error = response.json()["error"]
    assert f": {field}: " in error
    assert "required" in error.lower()
    assert starter.calls == []


@pytest.mark.parametrize(
    ("event", "payload", "field"),
    [
        ("Push Hook", replaced(gl.PUSH, "checkout_sha", 42), "checkout_sha"),
        ("Push Hook", replaced(gl.PUSH, "after", "HEAD"), "after"),
        ("Push Hook", replaced(gl.PUSH, "ref", ["refs/heads/master"]), "ref"),
        ("Push Hook", replaced(gl.PUSH, "project", "mike/diaspora"), "project"),
        ("Push Hook", replaced(gl.PUSH, "project.path_with_namespace", None), "project.path_with_namespace"),
        (
            "Merge Request Hook",
            replaced(gl.MERGE_REQUEST, "object_attributes.iid", "seven"),
            "object_attributes.iid",
        ),
        (
            "Merge Request Hook",
            replaced(gl.MERGE_REQUEST, "object_attributes.last_commit", []),
            "object_attributes.last_commit",
        ),
        (
            "Merge Request Hook",
            replaced(gl.MERGE_REQUEST, "object_attributes.oldrev", 1),
            "object_attributes.oldrev",
        ),
        ("Push Hook", [gl.PUSH], "(payload)"),
        ("Merge Request Hook", "merge request", "(payload)"),
    ],
    ids=[
        "checkout_sha-number",
        "after-not-a-sha",
        "ref-list",
        "project-string",
        "path-null",
        "iid-word",
        "last_commit-list",
        "oldrev-number",
        "payload-list",
        "payload-string",
    ],
)
def test_a_wrongly_typed_field_is_a_400_naming_it(
    client: TestClient, starter: FakeStarter, event: str, payload: object, field: str
) -> None:
    """A field Shipline reads holding a value of the wrong type is refused with the field's path."""
    response = deliver(client, event, payload)

    assert response.status_code == 400
    assert f": {field}: " in response.json()["error"]
    assert starter.calls == []


def test_a_body_of_exactly_one_mebibyte_is_taken(client: TestClient, starter: FakeStarter) -> None:
    """The limit is inclusive: GitLab's payload padded to 1 MiB is still an event."""
    body = gl.body(gl.PUSH)
    body += b" " * (MAX_BODY - len(body))

    response = client.post("/hooks/gitlab", content=body, headers=gl.headers("Push Hook", SECRET))

    assert response.status_code == 202
    assert len(starter.calls) == 1


def test_a_body_over_one_mebibyte_is_a_413(client: TestClient, starter: FakeStarter) -> None:
    """One byte over the limit, announced by ``Content-Length``: refused, even with a valid event in it."""
    body = gl.body(gl.PUSH)
    body += b" " * (MAX_BODY + 1 - len(body))

    response = client.post("/hooks/gitlab", content=body, headers=gl.headers("Push Hook", SECRET))

    assert response.request.headers["content-length"] == str(MAX_BODY + 1)
    assert response.status_code == 413
    assert starter.calls == []


def test_a_chunked_body_over_one_mebibyte_is_a_413(client: TestClient, starter: FakeStarter) -> None:
    """Without ``Content-Length`` (chunked transfer) the limit holds on what arrives."""
    valid = gl.body(gl.PUSH)
    chunks = iter([valid[:-1], b" " * MAX_BODY, valid[-1:]])

    response = client.post("/hooks/gitlab", content=chunks, headers=gl.headers("Push Hook", SECRET))

    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 413
    assert starter.calls == []


# --- the body as it arrives (ASGI) --------------------------------------------------------------------


async def call_asgi(
    app: Starlette, receive: Receive, *, headers: dict[str, str], seconds: float = 5.0
) -> tuple[int, bytes]:
    """The status and body ``app`` answers a POST to the hook whose body arrives through ``receive``."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/hooks/gitlab",
        "raw_path": b"/hooks/gitlab",
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    # A bound on the test itself: a hook that waits for ever fails here instead of hanging the suite.
    async with asyncio.timeout(seconds):
        await app(scope, receive, send)
    (start,) = [m for m in sent if m["type"] == "http.response.start"]
    return start["status"], b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


class Body:
    """An ASGI ``receive`` that sends ``chunks`` (then more of ``then``, for ever) and counts its calls."""

    def __init__(self, *chunks: bytes, then: Callable[[], AsyncIterator[bytes]] | None = None) -> None:
        self.chunks = list(chunks)
        self.then = then() if then is not None else None
        self.calls = 0

    async def __call__(self) -> Message:
        self.calls += 1
        if self.chunks:
            return {"type": "http.request", "body": self.chunks.pop(0), "more_body": True}
        if self.then is not None:
            return {"type": "http.request", "body": await anext(self.then), "more_body": True}
        return {"type": "http.request", "body": b"", "more_body": False}


async def never() -> AsyncIterator[bytes]:
    """A client that stops sending, holding the connection open."""
    await asyncio.Event().wait()
    yield b""  # pragma: no cover - never reached


async def endless() -> AsyncIterator[bytes]:
    """A client that sends 64 KiB chunks for ever."""
    while True:
        yield b" " * 65536


async def test_an_announced_oversize_body_is_refused_before_any_of_it_is_read(
    asgi: Starlette, starter: FakeStarter
) -> None:
    """``Content-Length`` over 1 MiB is answered 413 without reading a byte of the body."""
    body = Body(then=endless)
    sent = gl.headers("Push Hook", SECRET) | {"Content-Length": str(MAX_BODY + 1)}

    status, _ = await call_asgi(asgi, body, headers=sent)

    assert status == 413
    assert body.calls == 0
    assert starter.calls == []


async def test_an_endless_body_is_refused_once_over_the_limit(asgi: Starlette, starter: FakeStarter) -> None:
    """A chunked body that never ends is cut off at 413 after just over 1 MiB, not read whole."""
    body = Body(then=endless)

    status, _ = await call_asgi(asgi, body, headers=gl.headers("Push Hook", SECRET))

    assert status == 413
    assert body.calls == MAX_BODY // 65536 + 1
    assert starter.calls == []


@pytest.mark.parametrize("sent_first", [[], [b'{"object_kind": "push", ']], ids=["nothing", "half"])
async def test_a_body_that_does_not_arrive_in_time_is_a_408(
    asgi: Starlette, starter: FakeStarter, monkeypatch: pytest.MonkeyPatch, sent_first: list[bytes]
) -> None:
    """A client that sends nothing, or part of the body, then stalls is answered 408 when the body time
    runs out, instead of holding the hook for ever."""
    monkeypatch.setattr(web_app, "BODY_SECONDS", 0.05)
    loop = asyncio.get_running_loop()
    began = loop.time()

    status, answer = await call_asgi(
        asgi, Body(*sent_first, then=never), headers=gl.headers("Push Hook", SECRET)
    )

    assert status == 408
    assert "did not arrive" in json.loads(answer)["error"]
    assert loop.time() - began < 2
    assert starter.calls == []


async def test_a_client_that_goes_away_mid_body_starts_nothing(asgi: Starlette, starter: FakeStarter) -> None:
    """A disconnect before the whole body arrived is a 400 (nobody reads it) and starts nothing."""
    sent: list[Message] = [
        {"type": "http.request", "body": gl.body(gl.PUSH)[:100], "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return sent.pop(0)

    status, _ = await call_asgi(asgi, receive, headers=gl.headers("Push Hook", SECRET))

    assert status == 400
    assert starter.calls == []


# --- health ---------------------------------------------------------------------------------------------


def test_healthz_answers_ok(client: TestClient) -> None:
    """``GET /healthz`` is what a supervisor or load balancer polls: 200 ``ok``."""
    response = client.get("/healthz")

    assert (response.status_code, response.text) == (200, "ok")


def test_the_hook_takes_posts_only(client: TestClient, starter: FakeStarter) -> None:
    """A GET to the hook (a browser, a scanner) is a 405, not an event."""
    assert client.get("/hooks/gitlab").status_code == 405
    assert starter.calls == []
