"""Task: the app's automated tests against a release, as a table in the UI."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from shipline.errors import AutoTestError
from shipline.release.autotest import CheckResult, run_auto_tests
from shipline.spec import AutoTests


@task(cache_policy=NO_CACHE)
def run_release_tests(app: str, env: str, base_url: str, tests: AutoTests) -> list[CheckResult]:
    """Run the HTTP checks and the test command against ``base_url``; fail if any check fails."""
    results = run_auto_tests(base_url, tests)
    create_table_artifact(
        key=f"autotest-{app}-{env}",
        table=[{**r.model_dump(), "seconds": round(r.seconds, 3)} for r in results],
        description=f"Auto-tests of {app} in {env} against {base_url}",
    )
    failed = [r for r in results if not r.passed]
    if failed:
        summary = "; ".join(f"{r.name}: {r.detail}" for r in failed)
        raise AutoTestError(f"{app}/{env}: {len(failed)} of {len(results)} auto-test(s) failed: {summary}")
    return results
