"""Flow: keep the log store within its retention and its closed days compact."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_table_artifact

from shipline.errors import StageError
from shipline.logs.maintenance import MaintenancePlan, PartitionReport, report
from tasks.logs import (
    delete_app_lines,
    drop_log_partition,
    list_log_partitions,
    optimize_log_partition,
    plan_log_maintenance,
    read_app_retentions,
    read_retention_policy,
)


@flow(name="log-maintenance")
def log_maintenance() -> list[PartitionReport]:
    """Drop the day partitions of collected logs past retention, delete older lines of the apps that keep
    fewer days, and compact every closed day.

    Nightly (deployment `log-maintenance-nightly`). The days kept and whether to compact are the
    `shipline-logs/default` block, read at each run; an app keeps fewer days with `log_retention_days` in
    its shipline.yaml (read from its newest releases). Today's partition is never dropped nor compacted, and
    the logs agent keeps writing meanwhile. The `log-maintenance` table lists every partition and what was
    done; a step that failed is named there and fails the run once the others are done.
    """
    policy = read_retention_policy()
    own = read_app_retentions(return_state=True)
    plan: MaintenancePlan = plan_log_maintenance(policy, own.result() if own.is_completed() else {})
    drops = [drop_log_partition(day, return_state=True) for day in plan.drops]
    deletes = [delete_app_lines(retention, return_state=True) for retention in plan.app_retentions]
    after_deletes = list_log_partitions() if plan.app_retentions else None
    optimizations = [optimize_log_partition(day, return_state=True) for day in plan.optimizations]

    done = {s.result().day: s.result().done for s in optimizations if s.is_completed()}
    failed = {
        day: str(state.message)
        for day, state in zip(plan.drops + plan.optimizations, drops + optimizations, strict=True)
        if not state.is_completed()
    }
    rows = report(plan, failed=failed, optimized=done, after_deletes=after_deletes)
    create_table_artifact(
        key="log-maintenance",
        table=[row.model_dump(mode="json") for row in rows]
        or [{"partition": "(none)", "action": "no partition: nothing to do"}],
        description=f"Log partitions and what maintenance did (retention {plan.retention_days} days)",
    )
    problems = len(failed) + (not own.is_completed()) + sum(not s.is_completed() for s in deletes)
    if problems:
        raise StageError(f"log maintenance: {problems} step(s) failed; the others are done (see the table)")
    return rows
