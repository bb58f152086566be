"""DORA's four key figures of an app, from its release history in one environment (usually prod)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from statistics import median

from pydantic import BaseModel

from shipline.release.history import Release, ReleaseStatus

_GOOD = {ReleaseStatus.LIVE, ReleaseStatus.SUPERSEDED}
_BAD = {ReleaseStatus.FAILED, ReleaseStatus.ROLLED_BACK}


class DoraMetrics(BaseModel):
    """Deployment frequency, lead time for changes, change failure rate and time to restore."""

    window_days: float
    deployments: int
    """Releases that went live in the window."""
    deployments_per_day: float
    lead_time_seconds: float | None
    """Median time from commit to live, over releases that record their commit time."""
    change_failure_rate: float | None
    """Failed or rolled-back releases among all finished ones."""
    time_to_restore_seconds: float | None
    """Median time from a failed release to the next release that went live."""


def _median(values: list[float]) -> float | None:
    return median(values) if values else None


def dora_metrics(releases: Sequence[Release], *, now: datetime, window: timedelta) -> DoraMetrics:
    """Compute the four figures over the releases created within ``window`` before ``now``.

    Args:
        releases: One environment's releases, oldest first.
        now: End of the window (timezone-aware).
        window: Length of the window.
    """
    start = now - window
    recent = [r for r in releases if r.created >= start]
    finished = [r for r in recent if r.finished is not None and r.status is not ReleaseStatus.DEPLOYING]
    live = [r for r in finished if r.status in _GOOD]
    lead_times = [
        (r.finished - r.committed).total_seconds()
        for r in live
        if r.finished is not None and r.committed is not None
    ]
    restores = []
    for index, release in enumerate(recent):
        if release.status in _BAD and release.finished is not None:
            following = next((r for r in recent[index + 1 :] if r.status in _GOOD and r.finished), None)
            if following is not None and following.finished is not None:
                restores.append((following.finished - release.finished).total_seconds())
    days = window.total_seconds() / 86400
    return DoraMetrics(
        window_days=days,
        deployments=len(live),
        deployments_per_day=len(live) / days,
        lead_time_seconds=_median(lead_times),
        change_failure_rate=(len(finished) - len(live)) / len(finished) if finished else None,
        time_to_restore_seconds=_median(restores),
    )
