"""Log maintenance: which day partitions go, which are compacted, and what each app keeps.

The ``log-maintenance`` flow runs nightly; everything it decides is decided here, from the partitions, the
time and the retentions, without Prefect or a store:

- a partition is **dropped** when its whole day is older than the platform's retention: with 14 days, on
  the 25th the partition of the 10th goes and that of the 11th stays, so no line younger than 14 days is
  dropped. Today's partition (and any of a later day, a clock running ahead) is never dropped;
- an app whose spec keeps its lines fewer days (``service.log_retention_days``) has its older lines
  **deleted** from the partitions that stay (a longer per-app retention cannot keep what a drop removes);
- every closed partition (a day before today) that stays is **optimized** (SQLite: FTS5 ``optimize``;
  PostgreSQL: ``VACUUM (ANALYZE)``); today's is **kept open**, the agent writing into it.

An app's retention comes from the newest release of each of its environments (the release records hold
the spec's service section). When its environments disagree the longest wins, and an environment whose
newest release sets none means the platform's retention: a line is deleted only when every environment's
current spec lets it go.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ValidationError

from shipline.errors import ConfigError, ReleaseError
from shipline.etcd_client import connect
from shipline.logs.store import Partition, day_of
from shipline.release.history import Release, newest_releases
from shipline.sizes import human_bytes
from shipline.spec import ServiceSpec


class Action(StrEnum):
    """What maintenance does with a partition."""

    DROP = "drop"
    OPTIMIZE = "optimize"
    KEEP_OPEN = "keep open"
    KEEP = "keep"
    """A closed day that stays as it is: optimizing is switched off."""


class PartitionPlan(BaseModel):
    """One partition as listed before maintenance, and what is to be done with it."""

    day: date
    lines: int
    bytes: int
    action: Action


class AppRetention(BaseModel):
    """An app whose lines older than ``before`` are deleted (its own, shorter retention of ``days``)."""

    app: str
    days: int
    before: datetime


class MaintenancePlan(BaseModel):
    """Everything one maintenance run does, decided before it starts."""

    now: datetime
    retention_days: int
    partitions: list[PartitionPlan]
    app_retentions: list[AppRetention]

    @property
    def drops(self) -> list[date]:
        """Days whose partition is dropped, oldest first."""
        return [p.day for p in self.partitions if p.action is Action.DROP]

    @property
    def optimizations(self) -> list[date]:
        """Days whose partition is optimized, oldest first."""
        return [p.day for p in self.partitions if p.action is Action.OPTIMIZE]


class PartitionReport(BaseModel):
    """One row of the run's table artifact."""

    partition: date
    lines: int
    bytes: int
    size: str
    action: str


def plan_maintenance(
    partitions: Sequence[Partition],
    *,
    now: datetime,
    retention_days: int,
    app_retention_days: Mapping[str, int],
    optimize: bool = True,
) -> MaintenancePlan:
    """Decide what a maintenance run at ``now`` does (UTC days).

    Args:
        partitions: The store's partitions, as listed.
        now: The time of the run (aware).
        retention_days: How many days the platform keeps (at least 1).
        app_retention_days: Days of each app that sets its own retention.
        optimize: Whether closed partitions are optimized.

    Returns:
        The plan: one entry per partition, oldest first, and the apps whose older lines are deleted.

    Raises:
        ConfigError: a retention under one day, or a naive ``now``.
    """
    if now.tzinfo is None:
        raise ConfigError("log maintenance needs an aware time (UTC days)", hint="pass datetime.now(UTC)")
    for who, days in [("the platform", retention_days), *app_retention_days.items()]:
        if days < 1:
            raise ConfigError(
                f"log retention of {who} is {days} days: it must keep at least 1 day",
                hint="fix retention_days in the shipline-logs/default block, or log_retention_days in the "
                "app's shipline.yaml",
            )
    today = day_of(now)
    oldest_kept = today - timedelta(days=retention_days)
    planned = []
    for partition in sorted(partitions, key=lambda p: p.day):
        if partition.day < oldest_kept:
            action = Action.DROP
        elif partition.day >= today:
            action = Action.KEEP_OPEN
        else:
            action = Action.OPTIMIZE if optimize else Action.KEEP
        planned.append(
            PartitionPlan(day=partition.day, lines=partition.lines, bytes=partition.bytes, action=action)
        )
    kept = [p.day for p in planned if p.action is not Action.DROP]
    retentions = []
    for app, days in sorted(app_retention_days.items()):
        before = now - timedelta(days=days)
        if days < retention_days and kept and kept[0] <= day_of(before):
            retentions.append(AppRetention(app=app, days=days, before=before))
    return MaintenancePlan(
        now=now, retention_days=retention_days, partitions=planned, app_retentions=retentions
    )


def report(
    plan: MaintenancePlan,
    *,
    failed: Mapping[date, str] | None = None,
    optimized: Mapping[date, str] | None = None,
    after_deletes: Sequence[Partition] | None = None,
) -> list[PartitionReport]:
    """The table of a run: each partition as listed before, and what was done with it.

    Args:
        plan: What the run set out to do.
        failed: Days whose drop or optimization failed, with the error.
        optimized: What optimizing each day did, as the store says it ("fts5 optimize").
        after_deletes: The partitions listed again after the per-app deletions (their counters tell how
            many lines each day lost).
    """
    failed = failed or {}
    optimized = optimized or {}
    lines_after = {p.day: p.lines for p in after_deletes or []}
    rows = []
    for entry in plan.partitions:
        if entry.day in failed:
            done = f"{entry.action.value} failed: {failed[entry.day]}"
        elif entry.action is Action.DROP:
            done = f"dropped (older than {plan.retention_days} days)"
        elif entry.action is Action.OPTIMIZE:
            done = f"optimized: {optimized.get(entry.day, 'done')}"
        elif entry.action is Action.KEEP_OPEN:
            done = "kept (open)"
        else:
            done = "kept (optimizing is off)"
        deleted = entry.lines - lines_after.get(entry.day, entry.lines)
        if entry.action is not Action.DROP and deleted > 0:
            done += f"; {deleted} lines deleted (per-app retention)"
        rows.append(
            PartitionReport(
                partition=entry.day,
                lines=entry.lines,
                bytes=entry.bytes,
                size=human_bytes(entry.bytes),
                action=done,
            )
        )
    return rows


def retention_of(releases: Sequence[Release]) -> dict[str, int]:
    """Each app's own log retention, from the newest release of each of its environments.

    Args:
        releases: The newest release of every app and environment.

    Returns:
        Days by app, for the apps whose every environment's release sets a retention (the longest).

    Raises:
        ReleaseError: a release record whose service section is not a valid spec section.
    """
    by_app: dict[str, list[int | None]] = {}
    for release in releases:
        section = release.request.get("service") or {}
        try:
            # Only this field: records written by earlier versions hold service sections of other shapes.
            own = ServiceSpec.model_validate({"log_retention_days": section.get("log_retention_days")})
        except ValidationError as exc:
            raise ReleaseError(
                f"release {release.number} of {release.app} in {release.env}: its log_retention_days is "
                f"invalid: {exc.errors()[0]['msg']}",
                hint="the app keeps the platform's log retention until its next release",
            ) from exc
        by_app.setdefault(release.app, []).append(own.log_retention_days)
    retentions = {}
    for app, days in by_app.items():
        set_days = [d for d in days if d is not None]
        if len(set_days) == len(days):
            retentions[app] = max(set_days)
    return retentions


def app_retentions(*, etcd_url: str) -> dict[str, int]:
    """Each app's own log retention, read from the release records in etcd.

    Raises:
        ServiceUnavailableError: etcd does not answer.
        ReleaseError: a newest release's record is invalid.
    """

    async def read() -> list[Release]:
        async with connect(etcd_url) as client:
            return await newest_releases(client)

    return retention_of(asyncio.run(read()))
