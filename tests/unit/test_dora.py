from datetime import UTC, datetime, timedelta

import pytest

from shipline.release.dora import dora_metrics
from shipline.release.history import Release, ReleaseStatus

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def release(
    number: int, status: ReleaseStatus, *, hours_ago: float, lead_minutes: float | None = 30
) -> Release:
    finished = NOW - timedelta(hours=hours_ago)
    committed = finished - timedelta(minutes=lead_minutes) if lead_minutes is not None else None
    return Release(
        number=number,
        app="shop",
        env="prod",
        image="r/apps/shop",
        digest="sha256:" + "a" * 64,
        sha="b" * 40,
        committed=committed,
        status=status,
        created=finished - timedelta(minutes=5),
        finished=finished,
    )


def test_four_figures_over_a_history() -> None:
    history = [
        release(1, ReleaseStatus.SUPERSEDED, hours_ago=70, lead_minutes=60),
        release(2, ReleaseStatus.ROLLED_BACK, hours_ago=50),
        release(3, ReleaseStatus.SUPERSEDED, hours_ago=49, lead_minutes=20),  # restored an hour later
        release(4, ReleaseStatus.FAILED, hours_ago=10),
        release(5, ReleaseStatus.LIVE, hours_ago=9.5, lead_minutes=10),  # restored half an hour later
    ]
    metrics = dora_metrics(history, now=NOW, window=timedelta(days=4))
    assert metrics.deployments == 3
    assert metrics.deployments_per_day == pytest.approx(0.75)
    assert metrics.lead_time_seconds == pytest.approx(20 * 60)
    assert metrics.change_failure_rate == pytest.approx(2 / 5)
    assert metrics.time_to_restore_seconds == pytest.approx((3600 + 1800) / 2)


def test_window_excludes_older_releases_and_deploying_ones() -> None:
    history = [
        release(1, ReleaseStatus.FAILED, hours_ago=24 * 40),
        release(2, ReleaseStatus.LIVE, hours_ago=2, lead_minutes=None),
        Release(
            number=3,
            app="shop",
            env="prod",
            image="r",
            digest="sha256:" + "a" * 64,
            sha="c" * 40,
            created=NOW - timedelta(minutes=1),
        ),
    ]
    metrics = dora_metrics(history, now=NOW, window=timedelta(days=30))
    assert (metrics.deployments, metrics.change_failure_rate) == (1, 0.0)
    assert metrics.lead_time_seconds is None
    assert metrics.time_to_restore_seconds is None


def test_no_history_gives_no_rates() -> None:
    metrics = dora_metrics([], now=NOW, window=timedelta(days=7))
    assert metrics.deployments == 0
    assert metrics.change_failure_rate is None
