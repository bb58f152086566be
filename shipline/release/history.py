"""Release history per app and environment, in etcd under ``/shipline/releases/{app}/{env}/``.

A release is numbered 1, 2, 3 … per app and environment; each number is claimed with a create-if-absent
transaction, so two flows recording at once get two numbers. Keys are zero-padded
(``/shipline/releases/shop/prod/000042``) so that etcd's key order is release order.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import aetcd
from pydantic import BaseModel, Field

from shipline.errors import ReleaseError
from shipline.etcd_client import create_if_absent
from shipline.names import validate_name

PREFIX = "/shipline/releases"
_DIGITS = 6


class ReleaseStatus(StrEnum):
    DEPLOYING = "deploying"
    LIVE = "live"
    FAILED = "failed"
    ROLLED_BACK = "rolled-back"
    SUPERSEDED = "superseded"
    RETIRED = "retired"
    """Not a deploy: the entry ``shipline retire`` records when the app leaves the environment."""


class ReleaseSubject(BaseModel):
    """Which image digest of which app, built from which commit, goes to which environment."""

    app: str
    env: str
    image: str
    """Repository of the image, e.g. 127.0.0.1:5000/apps/shop."""
    digest: str
    sha: str
    committed: datetime | None = None
    """Commit time of ``sha``: the start of the change's lead time."""

    @property
    def reference(self) -> str:
        """The image by digest, as it is deployed."""
        return f"{self.image}@{self.digest}"


class Release(ReleaseSubject):
    """One deployment of one image digest to one environment."""

    number: int
    flow_run_id: str | None = None
    request: dict[str, Any] = Field(default_factory=dict)
    """The release request (shipline.release_plan.ReleaseRequest) that made it: a rollback replays it."""
    status: ReleaseStatus = ReleaseStatus.DEPLOYING
    created: datetime = Field(default_factory=lambda: datetime.now(UTC))
    finished: datetime | None = None
    canary: str | None = None
    approval: str | None = None
    """Who approved the deploy and how they are known (``ApprovalDecision.recorded``); None: no gate."""
    """The canary's decision and figures, one line (``shipline.release.canary.CanaryVerdict.summary``)."""


def _prefix(app: str, env: str) -> str:
    validate_name(app, what="app name")
    validate_name(env, what="environment")
    return f"{PREFIX}/{app}/{env}/"


def _key(app: str, env: str, number: int) -> bytes:
    return f"{_prefix(app, env)}{number:0{_DIGITS}d}".encode()


async def list_releases(client: aetcd.Client, app: str, env: str) -> list[Release]:
    """Every release of ``app`` in ``env``, oldest first."""
    result = await client.get_prefix(_prefix(app, env).encode(), sort_order="ascend", sort_target="key")
    return [Release.model_validate_json(kv.value) for kv in result]


async def every_release(client: aetcd.Client, app: str | None = None) -> list[Release]:
    """Every release of every app (or of ``app``) in every environment, by app, environment and number."""
    prefix = f"{PREFIX}/{validate_name(app, what='app name')}/" if app is not None else f"{PREFIX}/"
    result = await client.get_prefix(prefix.encode(), sort_order="ascend", sort_target="key")
    return [Release.model_validate_json(kv.value) for kv in result]


async def newest_releases(client: aetcd.Client) -> list[Release]:
    """The newest release of every app in every environment, by app and environment."""
    result = await client.get_prefix(f"{PREFIX}/".encode(), sort_order="ascend", sort_target="key")
    newest: dict[tuple[str, str], Release] = {}
    for kv in result:
        release = Release.model_validate_json(kv.value)
        newest[(release.app, release.env)] = release  # keys ascend: a later number replaces an earlier
    return [newest[key] for key in sorted(newest)]


async def record_release(
    client: aetcd.Client,
    *,
    app: str,
    env: str,
    image: str,
    digest: str,
    sha: str,
    committed: datetime | None = None,
    flow_run_id: str | None = None,
    request: dict[str, Any] | None = None,
    approval: str | None = None,
) -> Release:
    """Record a new release in state ``deploying`` under the next free number.

    Raises:
        ReleaseError: if the digest is not a sha256 digest.
        ConfigError: if the app or environment name is invalid.
    """
    if not digest.startswith("sha256:") or len(digest) != 71:
        raise ReleaseError(f"{app}/{env}: {digest!r} is not an image digest (sha256:…)")
    for _ in range(100):
        existing = await list_releases(client, app, env)
        number = existing[-1].number + 1 if existing else 1
        release = Release(
            number=number,
            app=app,
            env=env,
            image=image,
            digest=digest,
            sha=sha,
            committed=committed,
            flow_run_id=flow_run_id,
            request=request or {},
            approval=approval,
        )
        if await create_if_absent(client, _key(app, env, number), release.model_dump_json().encode()):
            return release
    raise ReleaseError(f"{app}/{env}: could not claim a release number", transient=True)


async def set_status(client: aetcd.Client, release: Release, status: ReleaseStatus) -> Release:
    """Move ``release`` to ``status``; the first final status stamps ``finished`` (superseding keeps it)."""
    updated = release.model_copy(update={"status": status})
    if status is not ReleaseStatus.DEPLOYING and updated.finished is None:
        updated.finished = datetime.now(UTC)
    await client.put(_key(release.app, release.env, release.number), updated.model_dump_json().encode())
    return updated


def last_good(history: list[Release], *, before: int | None = None) -> Release | None:
    """The newest release that went live (live now, or superseded since), older than ``before`` if given."""
    good = {ReleaseStatus.LIVE, ReleaseStatus.SUPERSEDED}
    for release in reversed(history):
        if release.status in good and (before is None or release.number < before):
            return release
    return None
