"""Running ``shipline web``: ``shipline.web.app`` wired to the real GitLab block, etcd and Prefect."""

from __future__ import annotations

import asyncio
from uuid import UUID

import httpx
import uvicorn

from shipline.apps import OnboardedApp, app_of_project, list_apps
from shipline.config import Settings
from shipline.errors import ServiceUnavailableError
from shipline.etcd_client import connect
from shipline.gitlab.triggers import DeliveryStarter
from shipline.logs.stores import open_store
from shipline.prefect_auth import prefect_auth
from shipline.stack.unresponsive import Outcome, crash_if_unresponsive
from shipline.web.app import Cached, create_app


async def webhook_secret() -> str | None:
    """The ``shipline-gitlab/default`` block's webhook secret, as an operator last saved it (None: none)."""
    return await asyncio.to_thread(_read_webhook_secret)


def _read_webhook_secret() -> str | None:
    # In a thread: reading a block is a Prefect API call plus pydantic work that would otherwise hold the
    # event loop, and every hook in flight with it, for tens of milliseconds once a second.
    from blocks.gitlab import ShiplineGitLab

    try:
        block = ShiplineGitLab.configured()
    except Exception as exc:  # Prefect's client raises httpx and runtime errors when the server is away
        raise ServiceUnavailableError(
            f"the shipline-gitlab block cannot be read: {exc}", transient=True
        ) from exc
    if block is None or block.webhook_secret is None:
        return None
    return block.webhook_secret.get_secret_value()


class OnboardedApps:
    """Onboarded apps by GitLab project, read from etcd again once the list is a second old."""

    def __init__(self, etcd_url: str, *, seconds: float = 1.0) -> None:
        self.etcd_url = etcd_url
        self._apps: Cached[list[OnboardedApp]] = Cached(self._read, seconds=seconds)

    async def _read(self) -> list[OnboardedApp]:
        async with connect(self.etcd_url) as client:
            return await list_apps(client)

    async def __call__(self, project: str) -> OnboardedApp | None:
        return app_of_project(await self._apps(), project)


async def judge_run(run: UUID) -> Outcome:
    """Crash ``run`` if it is really unresponsive (the Prefect API of ``PREFECT_API_URL``)."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await crash_if_unresponsive(client, run)


async def serve(settings: Settings) -> None:
    """Serve on ``settings.host:settings.web_port`` until SIGTERM or SIGINT (uvicorn's graceful shutdown).

    The log page (``settings.logs_page_url``) searches the configured log store; a store that cannot be
    opened answers 503 on the page, and is tried again on the next search.
    """
    async with httpx.AsyncClient(timeout=10.0, trust_env=False, auth=prefect_auth(settings)) as client:
        app = create_app(
            secret=Cached(webhook_secret),
            apps=OnboardedApps(settings.etcd_url),
            starter=DeliveryStarter(settings.prefect_api_url, client),
            ui_url=settings.prefect_url,
            logs=lambda: open_store(settings),
            unresponsive=judge_run,
        )
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.web_port,
            log_level="warning",
            access_log=False,
            lifespan="on",  # closes the log store's connections at shutdown
        )
        await uvicorn.Server(config).serve()
