"""Running ``shipline web``: ``shipline.web.app`` wired to the real GitLab block, etcd and Prefect."""

from __future__ import annotations

from typing import cast

import httpx
import uvicorn

from shipline.apps import OnboardedApp, list_apps
from shipline.config import Settings
from shipline.errors import ServiceUnavailableError
from shipline.etcd_client import connect
from shipline.gitlab.triggers import DeliveryStarter
from shipline.web.app import Cached, create_app

GITLAB_BLOCK = "default"


async def webhook_secret() -> str | None:
    """The ``shipline-gitlab/default`` block's webhook secret, as an operator last saved it (None: none)."""
    from blocks.gitlab import ShiplineGitLab

    try:
        block = cast(ShiplineGitLab, await ShiplineGitLab.aload(GITLAB_BLOCK))
    except ValueError:
        return None
    except Exception as exc:  # Prefect's client raises httpx and runtime errors when the server is away
        raise ServiceUnavailableError(
            f"the shipline-gitlab block cannot be read: {exc}", transient=True
        ) from exc
    secret = block.webhook_secret
    return secret.get_secret_value() if secret is not None else None


class OnboardedApps:
    """Onboarded apps by GitLab project, read from etcd again once the list is a second old."""

    def __init__(self, etcd_url: str, *, seconds: float = 1.0) -> None:
        self.etcd_url = etcd_url
        self._apps: Cached[list[OnboardedApp]] = Cached(self._read, seconds=seconds)

    async def _read(self) -> list[OnboardedApp]:
        async with connect(self.etcd_url) as client:
            return await list_apps(client)

    async def __call__(self, project: str) -> OnboardedApp | None:
        apps = await self._apps()
        return next((a for a in apps if a.project and a.project.lower() == project.lower()), None)


async def serve(settings: Settings) -> None:
    """Serve on ``settings.host:settings.web_port`` until SIGTERM or SIGINT (uvicorn's graceful shutdown)."""
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
        app = create_app(
            secret=Cached(webhook_secret),
            apps=OnboardedApps(settings.etcd_url),
            starter=DeliveryStarter(settings.prefect_api_url, client),
            ui_url=settings.prefect_url,
        )
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.web_port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        await uvicorn.Server(config).serve()
