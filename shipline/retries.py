"""Which failures a Prefect task retries."""

from __future__ import annotations

from typing import Any

from shipline.errors import ShiplineError


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """``retry_condition_fn`` for pipeline tasks: retry unless the failure is known to be permanent.

    A ``ShiplineError`` carries whether it is transient; any other exception (a dropped connection, a
    timeout inside a client library) is treated as transient.
    """
    try:
        state.result()
    except ShiplineError as exc:
        return exc.transient
    except Exception:
        return True
    return False
