"""Onboarded apps, in etcd under ``/shipline/apps/{app}``: which repository an app is delivered from.

An app is onboarded once (``shipline apps add``): its name comes from its repository's ``shipline.yaml``,
and the record binds it to that repository, its GitLab project (``group/name``, when it lives in GitLab)
and its delivery branch. GitLab webhooks and the reconcile flow find an app by its project here.
"""

from __future__ import annotations

import json

import aetcd
from pydantic import BaseModel, field_validator

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
