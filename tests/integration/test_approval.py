"""The approval gate on the real Prefect server, answered with `shipline approve|reject`."""

import threading
import uuid

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

from shipline.config import Settings
from shipline.release.approval import ApprovalDecision, wait_for_approval
from tests.cli import shipline
from tests.waiting import eventually


@flow(name="approval-gate-test")
def gated(timeout_seconds: int) -> ApprovalDecision:
    return wait_for_approval(
        app="shop", env="prod", digest="sha256:" + "0" * 64, timeout_seconds=timeout_seconds
    )


class GatedRun:
    """The gated flow, run in a thread of this process against the stack's Prefect server."""

    def __init__(self, timeout_seconds: int) -> None:
        self.name = f"gate-{uuid.uuid4().hex[:10]}"
        self.result: ApprovalDecision | None = None
        runner = gated.with_options(flow_run_name=self.name)

        def target() -> None:
            self.result = runner(timeout_seconds)

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def wait_until_paused(self) -> None:
        with get_client(sync_client=True) as client:

            def paused() -> bool:
                runs = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[self.name]))
                )
                return bool(runs and runs[0].state is not None and runs[0].state.is_paused())

            assert eventually(
                paused, timeout=60, interval=0.2, what=f"flow run {self.name} paused at its approval gate"
            )

    def finish(self) -> ApprovalDecision:
        self.thread.join(timeout=60)
        assert self.result is not None, "the gated flow did not finish"
        return self.result


@pytest.mark.parametrize(("verb", "approved"), [("approve", True), ("reject", False)])
def test_cli_answers_the_gate(settings: Settings, verb: str, approved: bool) -> None:
    run = GatedRun(timeout_seconds=120)
    run.wait_until_paused()
    answered = shipline(verb, run.name, "--comment", f"{verb} from the shell")
    assert answered.returncode == 0, answered.stderr
    decision = run.finish()
    assert (decision.approve, decision.comment) == (approved, f"{verb} from the shell")
    assert decision.reviewer


def test_unanswered_gate_is_a_rejection(settings: Settings) -> None:
    run = GatedRun(timeout_seconds=3)
    decision = run.finish()
    assert decision.approve is False
    assert "no answer within 3s" in decision.comment


def test_answering_a_run_that_does_not_wait_is_an_error(settings: Settings) -> None:
    missing = shipline("approve", "no-such-run-name")
    assert missing.returncode == 1
    assert "error: no flow run is named 'no-such-run-name'" in missing.stderr
    run = GatedRun(timeout_seconds=120)
    run.wait_until_paused()
    assert shipline("approve", run.name).returncode == 0
    run.finish()
    again = shipline("reject", run.name)
    assert again.returncode == 1
    assert "is not waiting for approval" in again.stderr
