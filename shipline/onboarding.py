"""Onboarding an app: read its name from its repository, record where it is delivered from, hook GitLab.

``shipline apps add`` is the one way in: the app's name is the one its ``shipline.yaml`` gives (so a
repository cannot be onboarded under another app's name by accident), and, when the app lives in a GitLab
project and a GitLab block is configured, the project gets Shipline's webhook (push, tag push and merge
request events, with the secret) — created, or updated if it is there already.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, SecretStr

from shipline.apps import OnboardedApp, get_app, list_apps, remove_app, same_repository, save_app
from shipline.build.checkout import checkout
from shipline.errors import ConfigError
from shipline.etcd_client import connect
from shipline.gitlab.api import GitLabProject
from shipline.spec import load_spec


class Onboarded(BaseModel):
    """What ``shipline apps add`` did."""

    app: OnboardedApp
    webhook: Literal["created", "updated", "unchanged", "not configured"]


def read_app_name(repository: str, *, branch: str, token: SecretStr | None) -> str:
    """The app name in ``shipline.yaml`` at the head of ``branch`` of ``repository``.

    Raises:
        CheckoutError: if the repository or branch cannot be fetched.
        SpecError: if its spec is missing or invalid.
    """
    with tempfile.TemporaryDirectory(prefix="shipline-onboard-") as scratch:
        fetched = checkout(repository, ref=branch, workspace=Path(scratch) / "repo", token=token)
        return load_spec(fetched.workspace).app


def onboard(
    repository: str,
    *,
    branch: str,
    project: str | None,
    etcd_url: str,
    gitlab: GitLabProject | None,
    webhook_url: str,
    webhook_secret: SecretStr | None,
    token: SecretStr | None = None,
    transfer_from: str | None = None,
) -> Onboarded:
    """Record the app of ``repository`` and, with ``gitlab``, hook its project to ``webhook_url``.

    Args:
        transfer_from: The operator moving the app here from the repository it is bound to now (``shipline
            apps transfer``); None refuses an app bound elsewhere.

    Raises:
        ConfigError: if the app is bound to another repository already (and this is no transfer), or a
            GitLab project is given without a webhook secret to protect its hook.
        NotifyError: if GitLab refuses the hook.
    """
    name = read_app_name(repository, branch=branch, token=token)
    how = f"a transfer by {transfer_from}" if transfer_from else "shipline apps add"
    record = OnboardedApp(app=name, repository=repository, project=project, branch=branch, bound_by=how)

    async def save() -> None:
        async with connect(etcd_url) as client:
            existing = await get_app(client, name)
            moved = existing is not None and not same_repository(existing.repository, repository)
            if existing is not None and moved and transfer_from is None:
                raise ConfigError(
                    f"app {name} belongs to {existing.repository} (bound by {existing.bound_by}), "
                    f"not {repository}",
                    hint=f"if it really moved, an operator moves it: shipline apps transfer {repository}",
                )
            await save_app(client, record)

    asyncio.run(save())
    if gitlab is None or project is None:
        return Onboarded(app=record, webhook="not configured")
    if webhook_secret is None:
        raise ConfigError(
            "the shipline-gitlab block has no webhook_secret: a hook without one would be refused",
            hint="set webhook_secret in the shipline-gitlab/default block (Prefect UI, Blocks)",
        )
    return Onboarded(app=record, webhook=gitlab.ensure_webhook(webhook_url, secret=webhook_secret))


def onboarded_apps(*, etcd_url: str) -> list[OnboardedApp]:
    """Every onboarded app."""

    async def read() -> list[OnboardedApp]:
        async with connect(etcd_url) as client:
            return await list_apps(client)

    return asyncio.run(read())


def offboard(app: str, *, etcd_url: str) -> None:
    """Forget ``app`` (its releases and running instances stay).

    Raises:
        ConfigError: if ``app`` is not onboarded.
    """

    async def forget() -> bool:
        async with connect(etcd_url) as client:
            return await remove_app(client, app)

    if not asyncio.run(forget()):
        raise ConfigError(f"app {app} is not onboarded", hint="shipline apps list")
