"""Starting the delivery a GitLab event asks for, exactly once, through Prefect's REST API.

A delivery run is created from the ``delivery`` deployment with an idempotency key
(``shipline.gitlab.events.idempotency_key``): Prefect answers 201 for a new run and 200 with the existing
run for a key it has seen, so a redelivered event starts nothing new. Runs carry tags naming the project,
the event kind and the sha; a run the reconcile flow started for a head whose event was lost carries
``reconciled`` too, and an event for that same commit that arrives later is answered with that run.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any
from uuid import UUID

import httpx
from pydantic import BaseModel

from shipline.apps import OnboardedApp
from shipline.delivery import DELIVERY_DEPLOYMENT
from shipline.errors import ServiceUnavailableError
from shipline.gitlab.events import Trigger, idempotency_key

RECONCILED = "reconciled"
RETRY_DELAYS = (0.1, 0.3, 1.0)


class StartedRun(BaseModel):
    """The delivery run an event maps to, and whether this call created it."""

    id: UUID
    name: str
    created: bool


def run_tags(trigger: Trigger, *, reconciled: bool = False) -> list[str]:
    """Tags of the run a trigger starts: what it delivers, findable in the UI's filters."""
    tags = ["gitlab", f"project:{trigger.project}", f"{trigger.kind}:{trigger.ref}", f"sha:{trigger.sha}"]
    return [*tags, RECONCILED] if reconciled else tags


def run_parameters(trigger: Trigger, app: OnboardedApp) -> dict[str, Any]:
    """The delivery flow's parameters for ``trigger``: the app's repository at the event's commit."""
    parameters: dict[str, Any] = {"source": app.repository, "ref": trigger.sha}
    if trigger.build_only:
        parameters["environments"] = []
    return parameters


class DeliveryStarter:
    """Creates delivery runs on the Prefect server at ``api_url``.

    Args:
        api_url: Prefect's API, e.g. ``http://127.0.0.1:4200/api``.
        client: The HTTP client to use (one per process; connections are reused).
    """

    def __init__(self, api_url: str, client: httpx.AsyncClient, *, remembered: int = 4096) -> None:
        self.api_url, self.client = api_url.rstrip("/"), client
        self._deployment_id: str | None = None
        self._lock = asyncio.Lock()
        # Key -> run, for redeliveries: Prefect's idempotency stays the truth, this spares it the calls.
        self._runs: OrderedDict[str, StartedRun] = OrderedDict()
        self._remembered = remembered
        self._creating = asyncio.Lock()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        # Prefect on SQLite answers 503 while its database is busy: a few quick retries ride that out,
        # well within the time GitLab waits for an answer. Creating a run twice is safe (idempotency key).
        for delay in (*RETRY_DELAYS, None):
            try:
                response = await self.client.request(method, f"{self.api_url}{path}", **kwargs)
            except httpx.HTTPError as exc:
                if delay is not None:
                    await asyncio.sleep(delay)
                    continue
                raise ServiceUnavailableError(
                    f"Prefect at {self.api_url} does not answer: {type(exc).__name__}",
                    hint="shipline status shows whether the Prefect server is up",
                    transient=True,
                ) from exc
            if response.status_code < 500 or delay is None:
                break
            await asyncio.sleep(delay)
        if response.status_code >= 400:
            raise ServiceUnavailableError(
                f"Prefect at {self.api_url} answered {response.status_code} to {method} {path}: "
                f"{response.text[:200]}",
                hint=f"is the {DELIVERY_DEPLOYMENT} deployment applied? shipline up applies it",
                transient=response.status_code >= 500,
            )
        return response

    async def deployment_id(self) -> str:
        async with self._lock:
            if self._deployment_id is None:
                found = await self._request("GET", f"/deployments/name/{DELIVERY_DEPLOYMENT}")
                self._deployment_id = str(found.json()["id"])
            return self._deployment_id

    async def _first_run(self, tags: list[str]) -> StartedRun | None:
        found = await self._request(
            "POST", "/flow_runs/filter", json={"flow_runs": {"tags": {"all_": tags}}, "limit": 1}
        )
        runs = found.json()
        return StartedRun(id=runs[0]["id"], name=runs[0]["name"], created=False) if runs else None

    async def reconciled_run(self, trigger: Trigger) -> StartedRun | None:
        """The run the reconcile flow started for the trigger's commit, if any."""
        return await self._first_run(run_tags(trigger, reconciled=True))

    async def any_run(self, trigger: Trigger) -> StartedRun | None:
        """Any run an event or the reconcile flow started for the trigger's project and commit."""
        return await self._first_run([f"project:{trigger.project}", f"sha:{trigger.sha}"])

    async def start(
        self, trigger: Trigger, app: OnboardedApp, *, delivery_id: str | None, reconciled: bool = False
    ) -> StartedRun:
        """The delivery run for ``trigger``: created, or the one an earlier delivery of the event created.

        Raises:
            ServiceUnavailableError: if Prefect does not answer or refuses the run.
        """
        key = idempotency_key(trigger, delivery_id=delivery_id)
        if (known := self._runs.get(key)) is not None:
            return known
        # One creation at a time: concurrent deliveries of one event (GitLab retrying while the first is
        # answered) wait for the first and find its run, instead of all asking Prefect at once.
        async with self._creating:
            if (known := self._runs.get(key)) is not None:
                return known
            return await self._start(trigger, app, key, reconciled=reconciled)

    async def _start(self, trigger: Trigger, app: OnboardedApp, key: str, *, reconciled: bool) -> StartedRun:
        if not reconciled and (earlier := await self.reconciled_run(trigger)) is not None:
            return self._remember(key, earlier)
        deployment = await self.deployment_id()
        response = await self._request(
            "POST",
            f"/deployments/{deployment}/create_flow_run",
            json={
                "parameters": run_parameters(trigger, app),
                "idempotency_key": key,
                "tags": run_tags(trigger, reconciled=reconciled),
            },
        )
        run = response.json()
        started = StartedRun(id=run["id"], name=run["name"], created=response.status_code == 201)
        self._remember(key, started.model_copy(update={"created": False}))
        return started

    def _remember(self, key: str, run: StartedRun) -> StartedRun:
        self._runs[key] = run
        while len(self._runs) > self._remembered:
            self._runs.popitem(last=False)
        return run
