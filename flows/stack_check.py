"""Flow: prove that an environment's worker picks up that environment's runs."""

from __future__ import annotations

from prefect import flow, get_run_logger

from tasks.worker_identity import WorkerIdentity, describe_worker


@flow(name="stack-check")
def stack_check() -> WorkerIdentity:
    """Report which work pool's worker executed this run.

    Not deployed by ``shipline up`` (operators see only deployments that do work); the component tests
    deploy it once per pool for themselves. Deployed on a pool, a run of it shows that the pool's worker is
    alive: the run's result names the pool and worker that ran it.
    """
    identity = describe_worker()
    get_run_logger().info(
        "executed by worker %s of pool %s on %s", identity.worker, identity.pool, identity.host
    )
    return identity
