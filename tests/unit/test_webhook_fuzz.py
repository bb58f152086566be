"""Property: whatever reaches ``POST /hooks/gitlab``, the service answers without a 5xx, starts a delivery
only for an authenticated, valid event of an onboarded app, and keeps answering ``/healthz``.

Requests are drawn from random bytes, random JSON, GitLab's documented payloads (``tests/gitlab_payloads``)
retargeted and then mutated (fields removed or retyped, often the ones Shipline reads), with random or
near-miss tokens, event names, delivery ids and extra headers. JSON nested deeper than ``json`` parses
is drawn on its own (``st.recursive`` stays far below that depth).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipline.gitlab.events import EVENTS
from shipline.web.app import Cached, create_app
from tests import gitlab_payloads as gl
from tests.unit.test_webhook import ONBOARDED, UI, Apps, FakeStarter, Secret, TestClient

SECRET = "fuzz-secret"
PROJECTS = {app.project.lower(): app for app in ONBOARDED if app.project}
SHAS = st.sampled_from(
    ["da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7", gl.ZERO_SHA]
)
SHAS = SHAS | st.text("0123456789abcdef", min_size=40, max_size=40)

# Fields Shipline reads, by event: mutations aim at them half of the time, at any field otherwise.
READ = {
    "Push Hook": ["ref", "before", "after", "checkout_sha", "project", "project.path_with_namespace"],
    "Merge Request Hook": [
        "project",
        "project.path_with_namespace",
        "object_attributes",
        "object_attributes.iid",
        "object_attributes.action",
        "object_attributes.oldrev",
        "object_attributes.last_commit",
        "object_attributes.last_commit.id",
        "object_attributes.source_branch",
        "object_attributes.target_branch",
    ],
}
READ["Tag Push Hook"] = READ["Push Hook"]

# Values a field is retyped to: any JSON, or one that is nearly right for some field.
NEAR_MISSES: list[object] = [
    gl.ZERO_SHA,
    "DA1560886D4F094C3E6C9EF40349F7D38B5D27D7",
    "da1560886d4f094c3e6c9ef40349f7d38b5d27d",
    "refs/heads/master",
    "refs/tags/v1.0.0",
    "master",
    "open",
    "update",
    "approved",
    "",
    "\ud800",
    1,
    True,
    None,
    [],
    {},
    2**64,
    1.5,
]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=16),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=16,
)
# Header values as a client can send them: visible ASCII, space, tab and obs-text (ASGI passes bytes).
HEADER_VALUE = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f") | st.just("\t"),
    max_size=40,
).map(lambda text: text.encode("latin-1"))
OWN_HEADERS = {"content-length", "transfer-encoding", "host", "idempotency-key"}
EXTRA_HEADER_NAME = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=24).filter(
    lambda name: name not in OWN_HEADERS and not name.startswith("x-gitlab")
)


@dataclass(frozen=True)
class Hook:
    """One drawn request, and what the test knows about it."""

    headers: list[tuple[bytes, bytes]]
    body: bytes
    token_ok: bool
    event: str | None
    starts: bool
    """A documented event for an onboarded app, unchanged, with a matching event header and token."""


def _dotted(path: str) -> list[str]:
    return path.split(".") if path else []


def _paths(node: object, prefix: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Every field and list item of a JSON value, as key paths."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


def _mutate(payload: object, path: tuple[str | int, ...], value: object, *, delete: bool) -> object:
    """``payload`` with the item at ``path`` deleted or set to ``value`` (unchanged if the path is gone)."""
    if not path:
        return payload if delete else value
    node: Any = payload
    for part in path[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return payload
    last = path[-1]
    if isinstance(node, dict) and isinstance(last, str):
        if delete:
            node.pop(last, None)
        else:
            node[last] = value
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        if delete:
            del node[last]
        else:
            node[last] = value
    return payload


@st.composite
def documented(draw: st.DrawFn) -> tuple[str, dict[str, Any], bool]:
    """A documented event retargeted to a project, ref and commit; True if it starts a delivery."""
    event = draw(st.sampled_from(EVENTS))
    project = draw(st.sampled_from([*PROJECTS, "MIKE/Diaspora", "someone/else"]))
    app = PROJECTS.get(project.lower())
    sha = draw(SHAS)
    if event == "Push Hook":
        branch = draw(st.sampled_from([app.branch if app else "master", "feature"]))
        payload = gl.push(project, branch, sha)
        return event, payload, app is not None and branch == app.branch and sha != gl.ZERO_SHA
    if event == "Tag Push Hook":
        return event, gl.tag_push(project, "v1.0.0", sha), app is not None and sha != gl.ZERO_SHA
    action = draw(st.sampled_from(["open", "reopen", "update", "approved", "close", "merge"]))
    oldrev = draw(st.none() | SHAS)
    starts = action in {"open", "reopen"} or (action == "update" and oldrev is not None)
    return event, gl.merge_request(project, sha, action=action, oldrev=oldrev), app is not None and starts


@st.composite
def hooks(draw: st.DrawFn) -> Hook:
    """A request to the hook: mostly GitLab-shaped, often subtly wrong, sometimes garbage."""
    event, payload, starts = draw(documented())
    kind = draw(st.sampled_from(["documented", "mutated", "json", "bytes", "deep"]))
    if kind == "mutated":
        mutated: object = payload
        for _ in range(draw(st.integers(1, 3))):
            everywhere = list(_paths(mutated))
            aimed = [tuple(_dotted(p)) for p in READ[event]]
            path = draw(st.sampled_from(aimed) | st.sampled_from(everywhere))
            value = draw(st.sampled_from(NEAR_MISSES) | JSON)
            mutated = _mutate(mutated, path, value, delete=draw(st.booleans()))
        body = json.dumps(mutated).encode()
        starts = False  # may still start (a harmless field changed): not asserted either way
    elif kind == "json":
        body, starts = json.dumps(draw(JSON)).encode(), False
    elif kind == "bytes":
        body, starts = draw(st.binary(max_size=512)), False
    elif kind == "deep":
        # Well under 1 MiB, and around or far beyond the depth at which json.loads gives up.
        opening = draw(st.sampled_from([b"[", b'{"project": ', b'[{"a": ']))
        body, starts = opening * draw(st.integers(500, 100_000 // len(opening))), False
    else:
        body = gl.body(payload)

    # Mostly the right token and event, so that most requests get past authentication to the parsing.
    token: bytes | None = SECRET.encode()
    if draw(st.integers(0, 9)) >= 7:
        near = [SECRET.upper().encode(), SECRET.encode() + b" ", SECRET.encode()[:-1], b""]
        token = draw(st.sampled_from(near) | st.none() | HEADER_VALUE)
    sent_event: str | None = event
    if draw(st.integers(0, 9)) >= 7:
        sent_event = draw(
            st.sampled_from([*EVENTS, "Issue Hook", "push hook"]) | st.none() | st.text(max_size=20)
        )
    if sent_event is not None and not all(" " <= c <= "\xff" for c in sent_event):
        sent_event = None
    headers = [(b"content-type", b"application/json"), (b"user-agent", gl.USER_AGENT.encode())]
    if sent_event is not None:
        headers.append((b"x-gitlab-event", sent_event.encode("latin-1")))
    if token is not None:
        headers.append((b"x-gitlab-token", token))
    for name in ("idempotency-key", "x-gitlab-event-uuid", "x-gitlab-webhook-uuid"):
        value = draw(st.none() | HEADER_VALUE)
        if value is not None:
            headers.append((name.encode(), value))
    for name, value in draw(st.dictionaries(EXTRA_HEADER_NAME, HEADER_VALUE, max_size=3)).items():
        headers.append((name.encode(), value))

    token_ok = token == SECRET.encode()
    return Hook(headers, body, token_ok, sent_event, starts and token_ok and sent_event == event)


@pytest.fixture(scope="module")
def starter() -> FakeStarter:
    return FakeStarter()


@pytest.fixture(scope="module")
def client(starter: FakeStarter) -> Iterator[TestClient]:
    app = create_app(secret=Cached(Secret(SECRET)), apps=Apps(*ONBOARDED), starter=starter, ui_url=UI)
    # raise_server_exceptions=False: a crash must show as the 500 a client would get, for the assertion.
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(hook=hooks())
def test_any_request_is_answered_without_5xx_and_starts_only_valid_events(
    client: TestClient, starter: FakeStarter, hook: Hook
) -> None:
    """No request crashes the service or starts a run it should not; GitLab's own events still do."""
    before = len(starter.calls)

    response = client.post("/hooks/gitlab", content=hook.body, headers=hook.headers)

    started = starter.calls[before:]
    assert response.status_code in {200, 202, 400, 401}, response.text
    assert client.get("/healthz").text == "ok"
    if not hook.token_ok:
        assert response.status_code == 401
    if hook.starts:
        assert response.status_code in {200, 202}
        assert len(started) == 1
    if not started:
        assert response.status_code != 202
        if response.status_code == 200:  # accepted, started nothing: GitLab is told why
            assert response.json()["started"] is False
            assert response.json()["reason"]
        return
    # A run was started: the request must have been an authenticated event of an onboarded app, and the
    # run must be of the commit the payload names.
    (call,) = started
    assert hook.token_ok
    assert hook.event in EVENTS
    payload = json.loads(hook.body)
    project = payload["project"]["path_with_namespace"]
    assert PROJECTS[project.lower()] == call.app
    if hook.event == "Merge Request Hook":
        assert call.trigger.sha == payload["object_attributes"]["last_commit"]["id"]
        assert call.parameters["environments"] == []
    else:
        assert call.trigger.sha == payload["checkout_sha"]
        assert "environments" not in call.parameters
    assert response.json()["flow_run_id"] == str(call.run.id)
