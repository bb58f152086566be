"""GitLab's webhook requests as GitLab documents them, for tests of ``POST /hooks/gitlab``.

The payloads are the examples of GitLab's "Webhook events" page (``doc/user/project/integrations/
webhook_events.md`` in gitlab-org/gitlab, mirrored as gitlabhq/gitlabhq), copied field for field. One
change: the documented Tag Push Hook is a lightweight tag (``after == checkout_sha``); ``TAG_PUSH`` is the
same event for an annotated tag, whose ``after`` is the tag object and ``checkout_sha`` the commit it
points to (``Gitlab::DataBuilder::Push.checkout_sha`` dereferences the tag).

API:

- ``PUSH``, ``TAG_PUSH``, ``MERGE_REQUEST`` and ``EXAMPLES`` (by ``X-Gitlab-Event``): the documented
  payloads. Read-only: use the builders (which copy) to change one.
- ``push``, ``tag_push``, ``merge_request``: a documented payload retargeted to a project, ref and commit.
- ``headers``: the headers GitLab sends with an event.
- ``body``: a payload as the bytes GitLab posts.
"""

from __future__ import annotations

import json
from typing import Any, Final
from uuid import uuid4

ZERO_SHA: Final = "0" * 40
"""``after`` of a deleted branch or tag (GitLab's blank ref)."""

_AVATAR: Final = (
    "https://s.gravatar.com/avatar/d4c74594d841139328695756648b6bd6?s=8:"
    "//s.gravatar.com/avatar/d4c74594d841139328695756648b6bd6?s=80"
)

INSTANCE: Final = "https://gitlab.example.com"
USER_AGENT: Final = "GitLab/17.5.1"

PUSH: Final[dict[str, Any]] = {
    "object_kind": "push",
    "event_name": "push",
    "before": "95790bf891e76fee5e1747ab589903a6a1f80f22",
    "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
    "ref": "refs/heads/master",
    "ref_protected": True,
    "checkout_sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
    "user_id": 4,
    "user_name": "John Smith",
    "user_username": "jsmith",
    "user_email": "john@example.com",
    "user_avatar": _AVATAR,
    "project_id": 15,
    "project": {
        "id": 15,
        "name": "Diaspora",
        "description": "",
        "web_url": "http://example.com/mike/diaspora",
        "avatar_url": None,
        "git_ssh_url": "git@example.com:mike/diaspora.git",
        "git_http_url": "http://example.com/mike/diaspora.git",
        "namespace": "Mike",
        "visibility_level": 0,
        "path_with_namespace": "mike/diaspora",
        "default_branch": "master",
        "homepage": "http://example.com/mike/diaspora",
        "url": "git@example.com:mike/diaspora.git",
        "ssh_url": "git@example.com:mike/diaspora.git",
        "http_url": "http://example.com/mike/diaspora.git",
    },
    "repository": {
        "name": "Diaspora",
        "url": "git@example.com:mike/diaspora.git",
        "description": "",
        "homepage": "http://example.com/mike/diaspora",
        "git_http_url": "http://example.com/mike/diaspora.git",
        "git_ssh_url": "git@example.com:mike/diaspora.git",
        "visibility_level": 0,
    },
    "commits": [
        {
            "id": "b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327",
            "message": "Update Catalan translation to e38cb41.\n\n"
            "See https://gitlab.com/gitlab-org/gitlab for more information",
            "title": "Update Catalan translation to e38cb41.",
            "timestamp": "2011-12-12T14:27:31+02:00",
            "url": "http://example.com/mike/diaspora/commit/b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327",
            "author": {"name": "Jordi Mallach", "email": "jordi@softcatala.org"},
            "added": ["CHANGELOG"],
            "modified": ["app/controller/application.rb"],
            "removed": [],
        },
        {
            "id": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            "message": "fixed readme",
            "title": "fixed readme",
            "timestamp": "2012-01-03T23:36:29+02:00",
            "url": "http://example.com/mike/diaspora/commit/da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            "author": {"name": "GitLab dev user", "email": "gitlabdev@dv6700.(none)"},
            "added": ["CHANGELOG"],
            "modified": ["app/controller/application.rb"],
            "removed": [],
        },
    ],
    "total_commits_count": 4,
}
"""The documented ``Push Hook``: ``mike/diaspora``, branch ``master``, new head ``da15608…``."""

TAG_OBJECT: Final = "569fe6d4cbb3e4a4a5ea0b5c6fa0a40e3f3d6f1c"
"""The id of the annotated tag object ``TAG_PUSH`` pushes (``after``); made up, as GitLab documents none."""

TAG_PUSH: Final[dict[str, Any]] = {
    "object_kind": "tag_push",
    "event_name": "tag_push",
    "before": ZERO_SHA,
    "after": TAG_OBJECT,
    "ref": "refs/tags/v1.0.0",
    "ref_protected": True,
    "checkout_sha": "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
    "user_id": 1,
    "user_name": "John Smith",
    "user_avatar": _AVATAR,
    "project_id": 1,
    "project": {
        "id": 1,
        "name": "Example",
        "description": "",
        "web_url": "http://example.com/jsmith/example",
        "avatar_url": None,
        "git_ssh_url": "git@example.com:jsmith/example.git",
        "git_http_url": "http://example.com/jsmith/example.git",
        "namespace": "Jsmith",
        "visibility_level": 0,
        "path_with_namespace": "jsmith/example",
        "default_branch": "master",
        "homepage": "http://example.com/jsmith/example",
        "url": "git@example.com:jsmith/example.git",
        "ssh_url": "git@example.com:jsmith/example.git",
        "http_url": "http://example.com/jsmith/example.git",
    },
    "repository": {
        "name": "Example",
        "url": "ssh://git@example.com/jsmith/example.git",
        "description": "",
        "homepage": "http://example.com/jsmith/example",
        "git_http_url": "http://example.com/jsmith/example.git",
        "git_ssh_url": "git@example.com:jsmith/example.git",
        "visibility_level": 0,
    },
    "commits": [],
    "total_commits_count": 0,
}
"""The documented ``Tag Push Hook`` (``jsmith/example``, tag ``v1.0.0`` of commit ``82b3d5a…``), annotated:
``after`` is ``TAG_OBJECT`` instead of the commit."""

_LABEL: Final[dict[str, Any]] = {
    "id": 206,
    "title": "API",
    "color": "#ffffff",
    "project_id": 14,
    "created_at": "2013-12-03T17:15:43Z",
    "updated_at": "2013-12-03T17:15:43Z",
    "template": False,
    "description": "API related issues",
    "type": "ProjectLabel",
    "group_id": 41,
}
_AWESOME_PROJECT: Final[dict[str, Any]] = {
    "name": "Awesome Project",
    "description": "Aut reprehenderit ut est.",
    "web_url": "http://example.com/awesome_space/awesome_project",
    "avatar_url": None,
    "git_ssh_url": "git@example.com:awesome_space/awesome_project.git",
    "git_http_url": "http://example.com/awesome_space/awesome_project.git",
    "namespace": "Awesome Space",
    "visibility_level": 20,
    "path_with_namespace": "awesome_space/awesome_project",
    "default_branch": "master",
    "homepage": "http://example.com/awesome_space/awesome_project",
    "url": "http://example.com/awesome_space/awesome_project.git",
    "ssh_url": "git@example.com:awesome_space/awesome_project.git",
    "http_url": "http://example.com/awesome_space/awesome_project.git",
}
_USER1: Final[dict[str, Any]] = {
    "id": 6,
    "name": "User1",
    "username": "user1",
    "avatar_url": "http://www.gravatar.com/avatar/e64c7d89f26bd1972efa854d13d7dd61?s=40\u0026d=identicon",
}

MERGE_REQUEST: Final[dict[str, Any]] = {
    "object_kind": "merge_request",
    "event_type": "merge_request",
    "user": {
        "id": 1,
        "name": "Administrator",
        "username": "root",
        "avatar_url": "http://www.gravatar.com/avatar/e64c7d89f26bd1972efa854d13d7dd61?s=40\u0026d=identicon",
        "email": "admin@example.com",
    },
    "project": {
        "id": 1,
        "name": "Gitlab Test",
        "description": "Aut reprehenderit ut est.",
        "web_url": "http://example.com/gitlabhq/gitlab-test",
        "avatar_url": None,
        "git_ssh_url": "git@example.com:gitlabhq/gitlab-test.git",
        "git_http_url": "http://example.com/gitlabhq/gitlab-test.git",
        "namespace": "GitlabHQ",
        "visibility_level": 20,
        "path_with_namespace": "gitlabhq/gitlab-test",
        "default_branch": "master",
        "ci_config_path": "",
        "homepage": "http://example.com/gitlabhq/gitlab-test",
        "url": "http://example.com/gitlabhq/gitlab-test.git",
        "ssh_url": "git@example.com:gitlabhq/gitlab-test.git",
        "http_url": "http://example.com/gitlabhq/gitlab-test.git",
    },
    "repository": {
        "name": "Gitlab Test",
        "url": "http://example.com/gitlabhq/gitlab-test.git",
        "description": "Aut reprehenderit ut est.",
        "homepage": "http://example.com/gitlabhq/gitlab-test",
    },
    "object_attributes": {
        "id": 99,
        "iid": 1,
        "target_branch": "master",
        "source_branch": "ms-viewport",
        "source_project_id": 14,
        "author_id": 51,
        "assignee_ids": [6],
        "assignee_id": 6,
        "reviewer_ids": [6],
        "title": "MS-Viewport",
        "created_at": "2013-12-03T17:23:34Z",
        "updated_at": "2013-12-03T17:23:34Z",
        "last_edited_at": "2013-12-03T17:23:34Z",
        "last_edited_by_id": 1,
        "milestone_id": None,
        "state_id": 1,
        "state": "opened",
        "blocking_discussions_resolved": True,
        "work_in_progress": False,
        "draft": False,
        "first_contribution": True,
        "merge_status": "unchecked",
        "target_project_id": 14,
        "description": "",
        "prepared_at": "2013-12-03T19:23:34Z",
        "total_time_spent": 1800,
        "time_change": 30,
        "human_total_time_spent": "30m",
        "human_time_change": "30s",
        "human_time_estimate": "30m",
        "url": "http://example.com/diaspora/merge_requests/1",
        "source": _AWESOME_PROJECT,
        "target": _AWESOME_PROJECT,
        "last_commit": {
            "id": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            "message": "fixed readme",
            "title": "Update file README.md",
            "timestamp": "2012-01-03T23:36:29+02:00",
            "url": "http://example.com/awesome_space/awesome_project/commits/da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            "author": {"name": "GitLab dev user", "email": "gitlabdev@dv6700.(none)"},
        },
        "labels": [_LABEL],
        "action": "open",
        "detailed_merge_status": "mergeable",
    },
    "labels": [_LABEL],
    "changes": {
        "updated_by_id": {"previous": None, "current": 1},
        "draft": {"previous": True, "current": False},
        "updated_at": {"previous": "2017-09-15 16:50:55 UTC", "current": "2017-09-15 16:52:00 UTC"},
        "labels": {
            "previous": [_LABEL],
            "current": [
                {
                    **_LABEL,
                    "id": 205,
                    "title": "Platform",
                    "color": "#123123",
                    "description": "Platform related issues",
                }
            ],
        },
        "last_edited_at": {"previous": None, "current": "2023-03-15 00:00:10 UTC"},
        "last_edited_by_id": {"previous": None, "current": 3278533},
    },
    "assignees": [_USER1],
    "reviewers": [_USER1],
}
"""The documented ``Merge Request Hook``: ``gitlabhq/gitlab-test`` !1 ``open``ed, last commit ``da15608…``
(no ``oldrev``: GitLab sends it only with an ``update`` that brings new commits)."""

EXAMPLES: Final[dict[str, dict[str, Any]]] = {
    "Push Hook": PUSH,
    "Tag Push Hook": TAG_PUSH,
    "Merge Request Hook": MERGE_REQUEST,
}
"""The documented payloads by ``X-Gitlab-Event``."""


def _retargeted(example: dict[str, Any], project: str | None) -> dict[str, Any]:
    """A copy of ``example`` with its project path (in every field and URL) replaced by ``project``."""
    # Through JSON text: a copy that shares no object (the examples reuse some), in which the project's
    # URLs follow its path; json.dumps escapes the new path.
    text = json.dumps(example)
    if project is not None:
        text = text.replace(example["project"]["path_with_namespace"], json.dumps(project)[1:-1])
    retargeted: dict[str, Any] = json.loads(text)
    return retargeted


def push(
    project: str | None = None, branch: str = "master", sha: str | None = None, *, before: str | None = None
) -> dict[str, Any]:
    """The documented Push Hook to ``project``'s ``branch``, whose new head is ``sha``.

    ``sha=ZERO_SHA`` is the branch's deletion (GitLab then sends ``checkout_sha: null``). Unset arguments
    keep the documented values (``mike/diaspora``, ``master``, ``da15608…``).
    """
    payload = _retargeted(PUSH, project)
    payload["ref"] = f"refs/heads/{branch}"
    if sha is not None:
        payload["after"] = sha
        payload["checkout_sha"] = None if sha == ZERO_SHA else sha
    if before is not None:
        payload["before"] = before
    return payload


def tag_push(
    project: str | None = None, tag: str = "v1.0.0", sha: str | None = None, *, tag_object: str = TAG_OBJECT
) -> dict[str, Any]:
    """The documented Tag Push Hook of annotated tag ``tag`` (object ``tag_object``) on commit ``sha``.

    ``sha=ZERO_SHA`` is the tag's deletion (``after`` all zeros, ``checkout_sha: null``).
    """
    payload = _retargeted(TAG_PUSH, project)
    payload["ref"] = f"refs/tags/{tag}"
    payload["after"] = tag_object
    if sha == ZERO_SHA:
        payload["after"], payload["checkout_sha"] = ZERO_SHA, None
    elif sha is not None:
        payload["checkout_sha"] = sha
    return payload


def merge_request(
    project: str | None = None,
    sha: str | None = None,
    *,
    action: str = "open",
    oldrev: str | None = None,
    iid: int = 1,
) -> dict[str, Any]:
    """The documented Merge Request Hook: ``action`` on merge request ``iid`` whose last commit is ``sha``.

    ``oldrev`` (the previous head) is set only when given, as GitLab sends it only for new commits.
    """
    payload = _retargeted(MERGE_REQUEST, project)
    attributes = payload["object_attributes"]
    attributes["action"], attributes["iid"] = action, iid
    if sha is not None:
        attributes["last_commit"]["id"] = sha
    if oldrev is not None:
        attributes["oldrev"] = oldrev
    return payload


def body(payload: object) -> bytes:
    """``payload`` as the bytes GitLab posts (JSON in UTF-8)."""
    return json.dumps(payload).encode()


def headers(
    event: str, token: str | None, *, uuid: str | None = None, idempotency_key: str | None = None
) -> dict[str, str]:
    """The headers GitLab 17 sends with an ``event`` (the ``X-Gitlab-Event`` value) hook.

    Args:
        event: ``Push Hook``, ``Tag Push Hook``, ``Merge Request Hook`` …
        token: The hook's secret token (``X-Gitlab-Token``); None: the hook has none, the header is left out.
        uuid: ``X-Gitlab-Event-UUID``, one per event; a new one when None.
        idempotency_key: ``Idempotency-Key``, the same across GitLab's retries and resends of a delivery;
            a new one when None. Pass the values of an earlier call to emulate a redelivery; delete the
            key from the result to emulate a GitLab older than 17.4, which does not send it.

    ``X-Gitlab-Webhook-UUID`` is new on every call, as on every request GitLab makes.
    """
    sent = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Idempotency-Key": idempotency_key or str(uuid4()),
        "X-Gitlab-Event": event,
        "X-Gitlab-Webhook-UUID": str(uuid4()),
        "X-Gitlab-Instance": INSTANCE,
        "X-Gitlab-Event-UUID": uuid or str(uuid4()),
    }
    if token is not None:
        sent["X-Gitlab-Token"] = token
    return sent
