"""Tasks of the log-maintenance flow: read the retentions, plan, then drop, delete and optimize."""

from __future__ import annotations

from datetime import UTC, date, datetime

from prefect import get_run_logger, task
from pydantic import BaseModel

from blocks.logs import ShiplineLogs
from shipline.config import load_settings
from shipline.logs.maintenance import AppRetention, MaintenancePlan, app_retentions, plan_maintenance
from shipline.logs.store import LogStore, Partition
from shipline.logs.stores import open_store
from shipline.retries import retry_if_transient

STORE_BUSY_SECONDS = 30.0
"""How long a maintenance statement waits for the agent's batch (SQLite has one writer at a time)."""


class RetentionPolicy(BaseModel):
    """The operator's settings of this run (the ``shipline-logs/default`` block)."""

    retention_days: int
    optimize: bool


class PartitionDone(BaseModel):
    """A partition dropped or optimized, and what the store says it did."""

    day: date
    done: str


class AppLinesDeleted(BaseModel):
    """Lines of an app deleted by its own retention."""

    app: str
    days: int
    lines: int


def _store() -> LogStore:
    return open_store(load_settings(), busy_seconds=STORE_BUSY_SECONDS)


@task
def read_retention_policy() -> RetentionPolicy:
    """The days kept and whether to optimize, as the shipline-logs/default block says now."""
    block = ShiplineLogs.current()
    return RetentionPolicy(retention_days=block.retention_days, optimize=block.optimize)


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=retry_if_transient)
def read_app_retentions() -> dict[str, int]:
    """Each app's own log retention, from the newest release of each environment in etcd."""
    retentions = app_retentions(etcd_url=load_settings().etcd_url)
    get_run_logger().info("apps with their own log retention: %s", retentions or "none")
    return retentions


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=retry_if_transient)
def plan_log_maintenance(policy: RetentionPolicy, app_retention_days: dict[str, int]) -> MaintenancePlan:
    """List the store's partitions and decide, for each, whether it is dropped, optimized or kept."""
    with _store() as store:
        partitions = store.partitions()
    plan = plan_maintenance(
        partitions,
        now=datetime.now(UTC),
        retention_days=policy.retention_days,
        app_retention_days=app_retention_days,
        optimize=policy.optimize,
    )
    get_run_logger().info(
        "%d partitions: %d to drop, %d to optimize, %d apps with older lines to delete",
        len(plan.partitions),
        len(plan.drops),
        len(plan.optimizations),
        len(plan.app_retentions),
    )
    return plan


@task(task_run_name="drop-{day}", retries=2, retry_delay_seconds=10, retry_condition_fn=retry_if_transient)
def drop_log_partition(day: date) -> PartitionDone:
    """Drop the partition of ``day``, past the retention."""
    with _store() as store:
        store.drop_partition(day)
    get_run_logger().info("dropped the partition of %s", day)
    return PartitionDone(day=day, done="dropped")


@task(
    task_run_name="delete-{retention.app}",
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=retry_if_transient,
)
def delete_app_lines(retention: AppRetention) -> AppLinesDeleted:
    """Delete an app's lines older than its own retention."""
    with _store() as store:
        lines = store.delete_before(retention.app, retention.before)
    get_run_logger().info("%s: %d lines older than %d days deleted", retention.app, lines, retention.days)
    return AppLinesDeleted(app=retention.app, days=retention.days, lines=lines)


@task(retries=2, retry_delay_seconds=10, retry_condition_fn=retry_if_transient)
def list_log_partitions() -> list[Partition]:
    """The store's partitions with their line and byte counters."""
    with _store() as store:
        return store.partitions()


@task(
    task_run_name="optimize-{day}", retries=2, retry_delay_seconds=10, retry_condition_fn=retry_if_transient
)
def optimize_log_partition(day: date) -> PartitionDone:
    """Compact the index of a closed day."""
    with _store() as store:
        done = store.optimize_partition(day)
    get_run_logger().info("optimized the partition of %s: %s", day, done)
    return PartitionDone(day=day, done=done)
