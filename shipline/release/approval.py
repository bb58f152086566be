"""The approval gate before a deploy: a form in the Prefect UI, or ``shipline approve|reject RUN``.

The gate pauses the calling flow run with a ``RunInput`` form. Both ways of answering resume that run
through the same API (``POST /api/flow_runs/{id}/resume`` with ``run_input``). A gate nobody answers
within its timeout counts as a rejection.
"""

from __future__ import annotations

import getpass
from uuid import UUID

from prefect import get_run_logger, pause_flow_run
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.exceptions import FlowPauseTimeout, ObjectNotFound
from prefect.input import RunInput

from shipline.errors import ApprovalError
from shipline.release.plan import ReleaseRequest


class ApprovalDecision(RunInput):
    """An operator's answer to an approval gate."""

    approve: bool = False
    comment: str = ""
    reviewer: str = ""

    def recorded(self) -> str:
        """The decision as the release records it: who, how they are known, and why.

        Without per-user accounts in Prefect, a name is what the answerer gave: the OS user of
        ``shipline approve``, or what was typed in the UI form — recorded as unverified.
        """
        verdict = "approved" if self.approve else "rejected"
        who = self.reviewer.strip() or "an operator who gave no name (UI form)"
        comment = f": {self.comment.strip()}" if self.comment.strip() else ""
        return f"{verdict} by {who} (unverified){comment}"


def wait_for_approval(*, app: str, env: str, digest: str, timeout_seconds: int) -> ApprovalDecision:
    """Pause the current flow run until an operator approves or rejects deploying ``digest`` to ``env``.

    Must be called from inside a flow run.

    Returns:
        The operator's decision; a rejection when nobody answers within ``timeout_seconds``.
    """
    logger = get_run_logger()
    logger.info("waiting up to %ss for approval to deploy %s %s to %s", timeout_seconds, app, digest, env)
    form = ApprovalDecision.with_initial_data(
        description=f"Deploy **{app}** image `{digest}` to **{env}**? Tick *approve*, or leave it to reject.",
        approve=False,
    )
    try:
        # Poll every second rather than Prefect's default 10 s, so an approval takes effect at once.
        decision = pause_flow_run(
            wait_for_input=form, timeout=timeout_seconds, poll_interval=1, key=f"approve-{app}-{env}"
        )
    except FlowPauseTimeout:
        decision = ApprovalDecision(approve=False, comment=f"no answer within {timeout_seconds}s: rejected")
    verdict = "granted" if decision.approve else "refused"
    logger.info("approval %s by %s: %s", verdict, decision.reviewer or "?", decision.comment)
    return decision


def approve_release(request: ReleaseRequest, *, required: bool) -> ApprovalDecision | None:
    """The approval step of a release: when ``required``, wait for an operator's answer.

    Must be called from inside the release's flow run.

    Returns:
        The approving decision, or None when no approval is required.

    Raises:
        ApprovalError: if the release is rejected, or nobody answers within the request's timeout.
    """
    if not required:
        return None
    decision = wait_for_approval(
        app=request.app,
        env=request.env,
        digest=request.digest,
        timeout_seconds=request.approval_timeout_seconds,
    )
    if not decision.approve:
        raise ApprovalError(f"{request.app} to {request.env} not approved: {decision.comment or 'rejected'}")
    return decision


def _resolve_run(client: SyncPrefectClient, run: str) -> UUID:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    try:
        return UUID(run)
    except ValueError:
        name = run  # not an id: look the run up by name
    runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))
    if not runs:
        raise ApprovalError(
            f"no flow run is named {run!r}", hint="give the run's id or name from the Prefect UI"
        )
    return runs[0].id


def answer_gate(run: str, *, approve: bool, comment: str = "", reviewer: str | None = None) -> UUID:
    """Resume the flow run ``run`` (id or name) that waits at an approval gate.

    Returns:
        The flow run id.

    Raises:
        ApprovalError: if there is no such run or it is not waiting for approval.
    """
    who = reviewer or f"{getpass.getuser()} (OS user of shipline approve)"
    decision = ApprovalDecision(approve=approve, comment=comment, reviewer=who)
    with get_client(sync_client=True) as client:
        run_id = _resolve_run(client, run)
        try:
            flow_run = client.read_flow_run(run_id)
        except ObjectNotFound as exc:
            raise ApprovalError(
                f"no flow run {run}", hint="give the run's id or name from the Prefect UI"
            ) from exc
        if flow_run.state is None or not flow_run.state.is_paused():
            state = flow_run.state.name if flow_run.state else "no state"
            raise ApprovalError(f"flow run {flow_run.name} is not waiting for approval (it is {state})")
        result = client.resume_flow_run(run_id, run_input=decision.model_dump(mode="json"))
    if result.status.value != "ACCEPT":
        raise ApprovalError(f"Prefect refused to resume {flow_run.name}: {result.details}")
    return run_id
