"""Task: tell which environment's worker runs the current flow run."""

from __future__ import annotations

import os
import socket

from prefect import task
from pydantic import BaseModel


class WorkerIdentity(BaseModel):
    """The environment, worker and host that executed a flow run."""

    pool: str
    worker: str
    host: str
    pid: int


@task
def describe_worker() -> WorkerIdentity:
    """Read the environment's name from the worker that started this process."""
    return WorkerIdentity(
        pool=os.environ.get("SHIPLINE_WORKER_POOL", "unknown"),
        worker=os.environ.get("SHIPLINE_WORKER_NAME", "unknown"),
        host=socket.gethostname(),
        pid=os.getpid(),
    )
