"""A delivery run: what it produced, and following it from the shell stage by stage."""

from __future__ import annotations

import time
from collections.abc import Callable
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import TaskRun
from pydantic import BaseModel

from shipline.flow_runs import run_deployment_and_wait
from shipline.gitlab.statuses import RELEASE_TASK

DELIVERY_DEPLOYMENT = "delivery/delivery"
"""The delivery flow's deployment (flow/deployment), on the ci pool."""
STAGES_SETTLE_SECONDS = 5.0
FINAL_STAGE_STATES = {"Completed", "Cached", "Failed", "Crashed", "Cancelled", "NotReady", "TimedOut"}


class DeliverySummary(BaseModel):
    """The commit, the image every environment runs, and the release number in each environment."""

    app: str
    sha: str
    source: str
    image: str
    digest: str
    releases: dict[str, int]


class RunReport(BaseModel):
    """The outcome of a delivery run, as `shipline run --json` prints it."""

    flow_run_id: UUID
    state: str
    message: str | None
    app: str | None = None
    sha: str | None = None
    image: str | None = None
    digest: str | None = None
    releases: dict[str, int] = {}
    stages: dict[str, str]
    summary: DeliverySummary | None = None


_CHILD_FLOW_PLACEHOLDER = "prefect.deployments."


def stage_name(task_run: TaskRun) -> str:
    """The stage a task run is: its task's function name (``compile_app``), or ``release-to-{env}``.

    Task runs are named for people (``build: hello-python``); the task key (``{function}-{code hash}``)
    names the stage for programs.
    """
    if task_run.name.startswith(RELEASE_TASK):
        return task_run.name
    return task_run.task_key.rsplit("-", 1)[0]


def _stages(client: SyncPrefectClient, flow_run_id: UUID) -> list[tuple[str, str, float]]:
    runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    runs.sort(key=lambda r: str(r.expected_start_time or r.created or ""))
    return [
        (stage_name(r), (r.state.name if r.state else None) or "Pending", r.total_run_time.total_seconds())
        for r in runs
        if not r.task_key.startswith(
            _CHILD_FLOW_PLACEHOLDER
        )  # the release runs show as their release-to task
    ]


def follow_delivery(
    source: str,
    *,
    ref: str | None,
    environments: list[str] | None,
    quiet: bool,
    echo: Callable[[str], None],
    poll_seconds: float = 0.5,
) -> RunReport:
    """Start a run of delivery/delivery and report each stage's state changes until the run ends."""
    parameters: dict[str, object] = {"source": source, "ref": ref}
    if environments is not None:  # [] means build only, no release
        parameters["environments"] = environments
    started = run_deployment_and_wait(DELIVERY_DEPLOYMENT, parameters=parameters, timeout=0)
    if not quiet:
        echo(f"delivery run {started.name} ({started.id})")
    shown: dict[str, str] = {}
    settled_by: float | None = None
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(started.id)
            stages = _stages(client, started.id)
            for stage, stage_state, seconds in stages:
                if shown.get(stage) != stage_state:
                    shown[stage] = stage_state
                    if not quiet:
                        took = (
                            f" ({seconds:.1f}s)" if stage_state in {"Completed", "Failed", "Cached"} else ""
                        )
                        echo(f"  {stage:<22} {stage_state}{took}")
            if flow_run.state is not None and flow_run.state.is_final():
                # The server records task run states from their events, a moment after they happen: once
                # the run is final, give its stages a few seconds to show their own final states.
                settled_by = settled_by or time.monotonic() + STAGES_SETTLE_SECONDS
                if (
                    all(state in FINAL_STAGE_STATES for _, state, _ in stages)
                    or time.monotonic() > settled_by
                ):
                    break
            time.sleep(poll_seconds)
    state = flow_run.state
    summary = None
    if state is not None and state.is_completed():
        summary = DeliverySummary.model_validate(state.result().model_dump())
    return RunReport(
        flow_run_id=started.id,
        state=state.name if state else "Unknown",
        message=state.message if state else None,
        app=summary.app if summary else None,
        sha=summary.sha if summary else None,
        image=summary.image if summary else None,
        digest=summary.digest if summary else None,
        releases=summary.releases if summary else {},
        stages=shown,
        summary=summary,
    )
