"""Flow runs from synchronous code (the CLI, the demo, tests, housekeeping): run a deployment and wait for it,
and tell which runs are still going on."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, cast
from uuid import UUID

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from shipline.errors import ConfigError, ServiceUnavailableError

_PAGE = 200
"""Flow runs asked for in one call."""


def run_deployment_and_wait(
    name: str,
    *,
    parameters: dict[str, Any] | None = None,
    timeout: float = 600.0,
    poll_interval: float = 0.5,
    idempotency_key: str | None = None,
) -> FlowRun:
    """Start a run of deployment ``name`` ("flow/deployment") and wait for its final state.

    Prefect's ``run_deployment`` does not raise when the run fails: callers check ``flow_run.state``.

    Args:
        name: Deployment, as ``flow-name/deployment-name``.
        parameters: Flow parameters.
        timeout: Seconds to wait for a final state.
        poll_interval: Seconds between state checks (Prefect's default of 5 s is slow for a CLI).
        idempotency_key: A repeated key returns the existing run instead of starting another.

    Returns:
        The flow run, with its last known state.

    Raises:
        ConfigError: if there is no such deployment.
    """
    try:
        # From synchronous code, Prefect's dual sync/async function returns the flow run itself.
        return cast(
            FlowRun,
            run_deployment(
                name,
                parameters=parameters,
                timeout=timeout,
                poll_interval=poll_interval,
                idempotency_key=idempotency_key,
            ),
        )
    except ObjectNotFound as exc:
        raise ConfigError(
            f"there is no Prefect deployment {name}",
            hint="see deployments/prefect.yaml; shipline up applies it",
        ) from exc


def unfinished_flow_runs(ids: Collection[str]) -> dict[str, str]:
    """Which of ``ids`` name flow runs that are not over (scheduled, pending, running, paused …).

    Args:
        ids: Candidate flow run ids; any that is not a UUID, or that Prefect does not know, is not a run
            that is going on.

    Returns:
        Each unfinished run's id with the name of its state ("Running", "Paused").

    Raises:
        ServiceUnavailableError: if the Prefect API does not answer.
    """
    candidates = []
    for candidate in ids:
        try:
            candidates.append(UUID(candidate))
        except ValueError:
            continue
    unfinished: dict[str, str] = {}
    try:
        with get_client(sync_client=True) as client:
            for start in range(0, len(candidates), _PAGE):
                page = candidates[start : start + _PAGE]
                runs = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=page)), limit=len(page)
                )
                for run in runs:
                    if run.state is None:
                        unfinished[str(run.id)] = "without a state"
                    elif not run.state.is_final():
                        unfinished[str(run.id)] = run.state.name or run.state.type.value
    except httpx.HTTPError as exc:
        raise ServiceUnavailableError(
            f"the Prefect API does not answer: {exc}",
            hint="shipline status shows the stack's Prefect server; PREFECT_API_URL names the one asked",
            transient=True,
        ) from exc
    return unfinished
