"""The web app with only its log page live: no GitLab secret, no onboarded app, no delivery to start."""

from __future__ import annotations

from starlette.applications import Starlette

from shipline.apps import OnboardedApp
from shipline.gitlab.events import Trigger
from shipline.gitlab.triggers import StartedRun
from shipline.web.app import create_app
from shipline.web.logs import LogStoreSource


async def no_secret() -> str | None:
    return None


async def no_apps(project: str) -> OnboardedApp | None:
    return None


class NoStarter:
    async def start(self, trigger: Trigger, app: OnboardedApp, *, delivery_id: str | None) -> StartedRun:
        raise AssertionError("the log page never starts a delivery")


def log_page_app(logs: LogStoreSource | None, *, ui_url: str = "http://ui") -> Starlette:
    """``create_app`` with the log store source ``logs`` and nothing behind the webhook."""
    return create_app(secret=no_secret, apps=no_apps, starter=NoStarter(), ui_url=ui_url, logs=logs)
