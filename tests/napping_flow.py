"""A flow of the tests that only waits: runs of it stay in flight for as long as a test needs."""

from __future__ import annotations

import time

from prefect import flow


@flow(name="napping")
def napping(seconds: float = 5.0) -> float:
    """Sleep ``seconds`` and return them."""
    time.sleep(seconds)
    return seconds
