"""Onboarded apps, in etcd under ``/shipline/apps/{app}``: which repository an app is delivered from.

An app is onboarded once (``shipline apps add``): its name comes from its repository's ``shipline.yaml``,
and the record binds it to that repository, its GitLab project (``group/name``, when it lives in GitLab)
and its delivery branch. GitLab webhooks and the reconcile flow find an app by its project here.

The record is also who owns the name: a delivery whose spec names an app bound to another repository fails
at its spec stage (``bind_to_repository``), so that no repository ships as another team's app. An app that
was never onboarded is bound by its first delivery; an operator moves an app with ``shipline apps transfer``.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aetcd
from pydantic import BaseModel, field_validator

from shipline.errors import SpecError
from shipline.etcd_client import create_if_absent
from shipline.names import validate_name

PREFIX = "/shipline/apps/"


class OnboardedApp(BaseModel):
    """An app and where it is delivered from."""

    app: str
    repository: str
    """Clone URL or local path the pipeline fetches from."""
    project: str | None = None
    """GitLab project path (``group/name``), when the app lives in GitLab."""
    branch: str = "main"
    """A push to this branch delivers the app."""
    bound_by: str = "shipline apps add"
    """How the app came to be bound to ``repository``: onboarded, its first delivery, or a transfer."""

    @field_validator("app")
    @classmethod
    def _app(cls, value: str) -> str:
        return validate_name(value, what="app name")


def _key(app: str) -> bytes:
    return f"{PREFIX}{validate_name(app, what='app name')}".encode()


async def save_app(client: aetcd.Client, app: OnboardedApp) -> None:
    """Record ``app`` (replacing an earlier record of the same name)."""
    await client.put(_key(app.app), app.model_dump_json().encode())


async def get_app(client: aetcd.Client, app: str) -> OnboardedApp | None:
    """The record of ``app``, or None if it is not onboarded."""
    found = await client.get(_key(app))
    return None if found is None else OnboardedApp.model_validate_json(found.value)


async def list_apps(client: aetcd.Client) -> list[OnboardedApp]:
    """Every onboarded app, by name."""
    found = [
        OnboardedApp.model_validate(json.loads(kv.value)) for kv in await client.get_prefix(PREFIX.encode())
    ]
    return sorted(found, key=lambda a: a.app)


async def remove_app(client: aetcd.Client, app: str) -> bool:
    """Forget ``app``; True if it was onboarded."""
    return bool(await client.delete(_key(app)))


def app_of_project(apps: list[OnboardedApp], project: str) -> OnboardedApp | None:
    """The app of ``apps`` onboarded from GitLab project ``project`` (case-insensitive, as GitLab's paths)."""
    return next((a for a in apps if a.project is not None and a.project.lower() == project.lower()), None)


def repository_identity(repository: str) -> str:
    """``repository`` as compared for ownership: a URL without credentials, a trailing slash or ``.git``,
    its scheme and host lower-case; a local path absolute, without a trailing ``.git``."""
    parts = urlsplit(repository)
    if parts.scheme and parts.netloc:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        path = parts.path.rstrip("/").removesuffix(".git")
        return urlunsplit((parts.scheme.lower(), netloc.lower(), path, "", ""))
    if parts.scheme == "file":
        repository = parts.path
    return str(Path(repository).expanduser().resolve()).rstrip("/").removesuffix(".git")


def same_repository(one: str, other: str) -> bool:
    return repository_identity(one) == repository_identity(other)


async def bind_to_repository(client: aetcd.Client, app: str, repository: str) -> OnboardedApp:
    """The app's record, made by this call (``bound_by`` its first delivery) if the app has none.

    Raises:
        SpecError: the app is bound to another repository.
    """
    first = OnboardedApp(app=app, repository=repository, bound_by="its first delivery")
    if await create_if_absent(client, _key(app), first.model_dump_json().encode()):
        return first
    bound = await get_app(client, app)
    if bound is None:  # removed in between: claim it again
        return await bind_to_repository(client, app, repository)
    if not same_repository(bound.repository, repository):
        raise SpecError(
            f"app {app} belongs to {bound.repository} (bound by {bound.bound_by}); this delivery comes from "
            f"{repository}, which cannot ship it",
            hint=f"name another app in shipline.yaml, or have an operator move it: "
            f"shipline apps transfer {repository}",
        )
    return bound
