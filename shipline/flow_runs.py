"""Running a Prefect deployment from synchronous code (the CLI, the demo, tests)."""

from __future__ import annotations

from typing import Any, cast

from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from shipline.errors import ConfigError


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
