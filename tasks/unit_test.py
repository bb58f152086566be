"""Task: the app's unit tests inside the middleware image, their JUnit report as a table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from blocks.environment import ShiplineEnvironment
from blocks.registry import ShiplineRegistry
from shipline.build.gates import no_test_case_ran, unit_test_problems
from shipline.build.junit import TestSummary, parse_junit
from shipline.build.registry import PushedImage
from shipline.config import load_settings
from shipline.docker import run_in_image
from shipline.errors import TestFailure
from shipline.files import inside
from shipline.gitlab.statuses import STAGE_HOOKS
from shipline.spec import AppSpec

GATES_HINT = (
    "give shipline.yaml a test section whose report holds the tests that ran; the operators set the "
    "gates in the shipline-environment blocks (Blocks in the Prefect UI)"
)


@task(task_run_name="unit-test: {spec.app}", **STAGE_HOOKS)
def run_unit_tests(
    spec: AppSpec,
    workspace: Path,
    middleware: PushedImage,
    sha: str,
    environments: Sequence[str] = ("pre", "prod"),
) -> TestSummary | None:
    """Run the test command; any failure stops the pipeline before an image is built. Where the block
    of ci or of an environment in ``environments`` requires tests, a spec without any fails here."""
    gates = ShiplineEnvironment.gates_for(spec.app, environments)
    if problems := unit_test_problems(spec.test, gates):
        raise TestFailure(f"{spec.app}: {'; '.join(problems)}", hint=GATES_HINT)
    if spec.test is None:
        get_run_logger().warning("%s declares no unit tests", spec.app)
        return None
    report = inside(workspace, spec.test.junit, what="test.junit")
    report.unlink(
        missing_ok=True
    )  # a stale report must not pass for this run's (a link goes, not its target)
    ci = ShiplineEnvironment.for_env("ci")
    done = run_in_image(
        ShiplineRegistry.current().docker_client(load_settings().docker_url),
        image=middleware.by_digest,
        command=f"export SHIPLINE_SHA={sha}; {spec.test.command}",
        workspace=workspace,
        mounts=spec.build.mounts,
        resources=ci.job_resources("ci"),
        user=ci.job_user,
        network=ci.job_network,
        log=get_run_logger().info,
    )
    junit = inside(workspace, spec.test.junit, what="test.junit")  # the tests ran meanwhile
    if done.code != 0 and not junit.exists():  # they did not get as far as a report: say why they ended
        raise TestFailure(
            f"{spec.app}: the test command exited {done.code} and left no {spec.test.junit}; its last "
            f"lines:\n{done.tail_text()}\n({ci.job_conditions('ci')})"
        )
    summary = parse_junit(junit)
    rows = [
        {"test": c.name, "outcome": c.outcome, "seconds": round(c.seconds, 3), "message": c.message}
        for c in summary.failures + [s for s in summary.slowest if s not in summary.failures]
    ]
    create_table_artifact(
        key=f"unit-tests-{spec.app}",
        table=rows or [{"test": "(none)", "outcome": "", "seconds": 0, "message": ""}],
        description=f"{spec.app}: {summary.passed} passed, {summary.failed} failed, {summary.errors} errors, "
        f"{summary.skipped} skipped; failures first, then the slowest tests",
    )
    if done.code != 0 or not summary.ok:
        first = summary.failures[0] if summary.failures else None
        detail = f": {first.name}: {first.message}" if first else f" (exit {done.code}):\n{done.tail_text()}"
        raise TestFailure(
            f"{spec.app}: {summary.failed + summary.errors} unit test(s) failed{detail}\n"
            f"({ci.job_conditions('ci')})"
        )
    if summary.passed == 0 and (refusal := no_test_case_ran(spec.test, gates)):
        raise TestFailure(f"{spec.app}: {refusal}", hint=GATES_HINT)
    return summary
