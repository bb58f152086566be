"""``shipline web``: Shipline's one web service, an ASGI app (starlette) served by uvicorn.

``POST /hooks/gitlab`` takes GitLab's webhooks (contract: shared/DESIGN.md §3, Webhook):

- 401 when ``X-Gitlab-Token`` is missing or differs from the ``shipline-gitlab`` block's webhook secret
  (compared in constant time; the block is read again at most a second after it changed, no restart);
- 413 for a body over 1 MiB (refused by its ``Content-Length``, or as soon as more has arrived), 408 for
  a body that does not arrive within ten seconds, 400 for an unknown event, a body that is not JSON or a
  payload that lacks a field Shipline reads — naming it;
- 2xx with a JSON reason for an event that starts nothing (GitLab disables hooks that keep failing);
- 202 with the flow run's id and UI URL for a new delivery, 200 with the same run for a redelivery.

``POST /hooks/prefect/unresponsive`` takes Prefect's automation ``shipline-crash-unresponsive-runs``
(``{"flow_run": "prefect.flow-run.<id>"}``) and marks the run Crashed only if it is still Running without a
heartbeat (``shipline.stack.unresponsive``); 200 with what was done, 400 for a body that names no run.

``GET /healthz`` answers ``ok`` while the service runs. ``/logs`` is the log search page
(``shipline.web.logs``), served when the app is given a log store. Nothing here blocks the event loop:
the GitLab block, onboarded apps and Prefect are reached asynchronously, the log store on threads.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Generic, Protocol, TypeVar, cast
from uuid import UUID

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from shipline.apps import OnboardedApp
from shipline.errors import ConfigError, ShiplineError
from shipline.gitlab.events import Ignored, decide, parse_event, project_of
from shipline.gitlab.events import Trigger as GitLabTrigger
from shipline.gitlab.triggers import StartedRun
from shipline.stack.unresponsive import Outcome, flow_run_id
from shipline.web.logs import LogPage, LogStoreSource

log = logging.getLogger("shipline.web")

MAX_BODY = 1024 * 1024
BODY_SECONDS = 10.0


class Starter(Protocol):
    """Starts the delivery run a trigger asks for (``shipline.gitlab.triggers.DeliveryStarter``)."""

    async def start(
        self, trigger: GitLabTrigger, app: OnboardedApp, *, delivery_id: str | None
    ) -> StartedRun:
        """The run for ``trigger``: created, or the one an earlier delivery of the same event created."""
        ...


T = TypeVar("T")
SecretSource = Callable[[], Awaitable[str | None]]
AppSource = Callable[[str], Awaitable[OnboardedApp | None]]
RunJudge = Callable[[UUID], Awaitable[Outcome]]
"""Crashes a suspected run if it really is unresponsive (``shipline.stack.unresponsive``)."""


class Cached(Generic[T]):
    """A value read through ``load`` again once it is ``seconds`` old, so that an edit takes effect that fast.

    Only the first call waits for a read. After that a caller gets the value at hand at once, and a value
    older than ``seconds`` is read again in the background (one read at a time): a slow read never holds
    up a request. A failed background read keeps the old value; the first read's failure is raised.
    """

    def __init__(self, load: Callable[[], Awaitable[T]], *, seconds: float = 1.0) -> None:
        self.load, self.seconds = load, seconds
        self._value: T | None = None
        self._read_at: float | None = None
        self._lock = asyncio.Lock()
        self._refresh: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        self._value = await self.load()
        self._read_at = time.monotonic()

    async def _read_quietly(self) -> None:
        try:
            await self._read()
        except Exception as exc:  # the last good value stays in use; the next call tries again
            log.warning("reading again failed, the last value stays in use: %s", exc)

    async def __call__(self) -> T:
        if self._read_at is None:
            async with self._lock:
                if self._read_at is None:
                    await self._read()
        elif time.monotonic() - self._read_at > self.seconds and (
            self._refresh is None or self._refresh.done()
        ):
            self._refresh = asyncio.create_task(self._read_quietly())
        return cast(T, self._value)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(
    *,
    secret: SecretSource,
    apps: AppSource,
    starter: Starter,
    ui_url: str,
    logs: LogStoreSource | None = None,
    unresponsive: RunJudge | None = None,
) -> Starlette:
    """The web service, reading the webhook secret, onboarded apps, Prefect and the log store through what
    it is given.

    Args:
        secret: The current webhook secret (None: none configured, so every hook is refused).
        apps: The app onboarded from a GitLab project path, or None.
        starter: Creates delivery runs.
        ui_url: Prefect UI's base URL, for the links in answers.
        logs: Opens the log store that ``/logs`` searches (None: no log page). Its stores are closed when
            the app shuts down (the ASGI lifespan).
        unresponsive: Judges a run Prefect's automation suspects (None: no such endpoint).
    """

    async def gitlab_hook(request: Request) -> Response:
        try:
            expected = await secret()
        except ShiplineError as exc:
            return _error(503, f"{exc.message} (GitLab will count this delivery as failed; redeliver it)")
        given = request.headers.get("x-gitlab-token", "")
        # Checked before the body is read: a client without the secret never gets to send a megabyte.
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            return _error(401, "X-Gitlab-Token is missing or wrong")
        try:
            async with asyncio.timeout(BODY_SECONDS):
                body = await request.body()
        except TimeoutError:
            return _error(408, f"the body did not arrive within {BODY_SECONDS:.0f} s")
        except ClientDisconnect:
            return _error(400, "the client went away before sending the whole body")
        kind = request.headers.get("x-gitlab-event")
        if not kind:
            return _error(400, "X-Gitlab-Event header is missing")
        try:
            payload: Any = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
            return _error(400, "the body is not JSON")
        try:
            event = parse_event(kind, payload)
        except ConfigError as exc:
            return _error(400, exc.message)
        project = project_of(event)
        try:
            app = await apps(project)
        except ShiplineError as exc:
            return _error(503, f"{exc.message} (GitLab will count this delivery as failed; redeliver it)")
        if app is None:
            return JSONResponse({"started": False, "reason": f"project {project} is not onboarded"})
        decision = decide(event, app)
        if isinstance(decision, Ignored):
            return JSONResponse({"started": False, "reason": decision.reason})
        delivery_id = request.headers.get("idempotency-key") or request.headers.get("x-gitlab-event-uuid")
        try:
            run = await starter.start(decision, app, delivery_id=delivery_id)
        except ShiplineError as exc:
            log.warning("%s: %s", project, exc.message)
            return _error(503, f"{exc.message} (GitLab will count this delivery as failed; redeliver it)")
        log.info(
            "%s %s %s@%s: run %s (%s)",
            kind,
            project,
            decision.ref,
            decision.sha[:12],
            run.name,
            "new" if run.created else "redelivery",
        )
        return JSONResponse(
            {
                "started": run.created,
                "app": app.app,
                "sha": decision.sha,
                "flow_run_id": str(run.id),
                "flow_run": run.name,
                "url": f"{ui_url}/runs/flow-run/{run.id}",
            },
            status_code=202 if run.created else 200,
        )

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def unresponsive_hook(request: Request) -> Response:
        assert unresponsive is not None
        try:
            async with asyncio.timeout(BODY_SECONDS):
                payload: Any = json.loads(await request.body())
        except (TimeoutError, ClientDisconnect, ValueError, RecursionError):
            return _error(400, "the body is not JSON")
        run = flow_run_id(str(payload.get("flow_run", ""))) if isinstance(payload, dict) else None
        if run is None:
            return _error(400, 'the body names no flow run: {"flow_run": "prefect.flow-run.<id>"}')
        try:
            outcome = await unresponsive(run)
        except Exception as exc:  # Prefect away or answering an error: the automation fires again later
            log.warning("flow run %s suspected unresponsive, not judged: %s", run, exc)
            return _error(503, f"Prefect could not be asked about flow run {run}: {exc}")
        log.info("%s", outcome.reason)
        return JSONResponse({"crashed": outcome.crashed, "reason": outcome.reason})

    routes: list[BaseRoute] = [
        Route("/hooks/gitlab", gitlab_hook, methods=["POST"], max_body_size=MAX_BODY),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    if unresponsive is not None:
        routes.append(
            Route("/hooks/prefect/unresponsive", unresponsive_hook, methods=["POST"], max_body_size=MAX_BODY)
        )
    log_page = LogPage(logs) if logs is not None else None
    if log_page is not None:
        routes += log_page.routes()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if log_page is not None:  # waits for the store calls under way, so off the event loop
                await asyncio.to_thread(log_page.close)

    return Starlette(routes=routes, lifespan=lifespan)
