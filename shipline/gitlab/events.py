"""GitLab webhook events, as GitLab sends them, and what each asks Shipline to do.

Only the fields Shipline reads are modelled (GitLab sends many more; they are ignored). A payload that
lacks one of them, or holds a value of the wrong type, is refused naming the field. Then ``decide`` says
what an event starts for an onboarded app:

- ``Push Hook`` to the app's delivery branch: a delivery of ``checkout_sha`` (the branch's new head);
  a branch deletion (``after`` all zeros) or another branch starts nothing;
- ``Tag Push Hook``: a delivery of ``checkout_sha`` — for an annotated tag ``after`` is the tag object,
  not the commit; a tag deletion starts nothing;
- ``Merge Request Hook`` ``open``, ``reopen``, or ``update`` with new commits (``oldrev`` present): the build
  stages only, on the merge request's last commit, reported on that commit; any other action (``approved``,
  ``close``, an update of the title …) starts nothing.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from shipline.apps import OnboardedApp
from shipline.errors import ConfigError

EVENTS = ("Push Hook", "Tag Push Hook", "Merge Request Hook")
ZERO_SHA = "0" * 40
Sha = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40}$")]
Kind = Literal["push", "tag", "merge-request"]


class _Payload(BaseModel):
    # strict: a number where GitLab sends a string (or true for an iid) is a malformed payload, not a guess
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


class Project(_Payload):
    path_with_namespace: Annotated[str, StringConstraints(min_length=1, max_length=255)]


class PushEvent(_Payload):
    """``Push Hook`` and ``Tag Push Hook``."""

    ref: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    before: Sha
    after: Sha
    checkout_sha: Sha | None
    project: Project
    tag: bool = False
    """Set from ``X-Gitlab-Event`` (``Tag Push Hook``), not from the payload."""


class LastCommit(_Payload):
    id: Sha


class MergeRequestAttributes(_Payload):
    iid: int
    action: str | None = None
    oldrev: Sha | None = None
    last_commit: LastCommit
    source_branch: str
    target_branch: str


class MergeRequestEvent(_Payload):
    """``Merge Request Hook``."""

    project: Project
    object_attributes: MergeRequestAttributes


Event = PushEvent | MergeRequestEvent


class Trigger(BaseModel):
    """A delivery an event asks for."""

    kind: Kind
    project: str
    ref: str
    """The branch, tag or ``merge-requests/{iid}`` the commit came with."""
    sha: str
    build_only: bool = False
    """Merge requests: build, test and scan the commit; release nothing."""


class Ignored(BaseModel):
    """An event that starts nothing, and why (answered with 2xx: GitLab disables hooks that keep failing)."""

    reason: str


def parse_event(event: str, payload: object) -> Event:
    """The event ``event`` (the ``X-Gitlab-Event`` header) read from its JSON payload.

    Raises:
        ConfigError: for an event Shipline does not take, or a payload that lacks a field it reads or holds
            a value of the wrong type — naming the field.
    """
    if event not in EVENTS:
        raise ConfigError(f"X-Gitlab-Event {event!r} is not one of: {', '.join(EVENTS)}")
    model: type[Event] = MergeRequestEvent if event == "Merge Request Hook" else PushEvent
    try:
        parsed = model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "(payload)"
        raise ConfigError(f"{event}: {field}: {first['msg']}") from exc
    if isinstance(parsed, PushEvent):
        return parsed.model_copy(update={"tag": event == "Tag Push Hook"})
    return parsed


def project_of(event: Event) -> str:
    """The GitLab project the event is about."""
    return event.project.path_with_namespace


def decide(event: Event, app: OnboardedApp) -> Trigger | Ignored:
    """What ``event`` starts for ``app`` (onboarded from the event's project)."""
    project = project_of(event)
    if isinstance(event, MergeRequestEvent):
        mr = event.object_attributes
        if mr.action in {"open", "reopen"} or (mr.action == "update" and mr.oldrev is not None):
            return Trigger(
                kind="merge-request",
                project=project,
                ref=f"merge-requests/{mr.iid}",
                sha=mr.last_commit.id,
                build_only=True,
            )
        return Ignored(reason=f"merge request !{mr.iid} action {mr.action!r} brings no new commit")
    if event.after == ZERO_SHA or event.checkout_sha is None:
        return Ignored(reason=f"{event.ref} was deleted")
    if event.tag != event.ref.startswith("refs/tags/"):
        return Ignored(
            reason=f"{event.ref} does not match the event ({'tag' if event.tag else 'branch'} push)"
        )
    if event.tag:
        return Trigger(
            kind="tag", project=project, ref=event.ref.removeprefix("refs/tags/"), sha=event.checkout_sha
        )
    branch = event.ref.removeprefix("refs/heads/")
    if branch != app.branch:
        return Ignored(reason=f"branch {branch!r} is not {app.app}'s delivery branch {app.branch!r}")
    return Trigger(kind="push", project=project, ref=branch, sha=event.checkout_sha)


def idempotency_key(trigger: Trigger, *, delivery_id: str | None) -> str:
    """The key a delivery run is created with, so that a redelivered event starts nothing new.

    ``delivery_id`` is GitLab's ``Idempotency-Key`` header (the same across its automatic retries and
    manual resends), else ``X-Gitlab-Event-UUID``; the project, event kind, ref and sha are always part of
    it. A run the reconcile flow starts for a head nobody delivered uses ``delivery_id=None``.
    """
    return f"gitlab:{trigger.project}:{trigger.kind}:{trigger.ref}:{trigger.sha}:{delivery_id or 'head'}"
