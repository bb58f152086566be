"""Task: the app's automated tests against a release, as a table in the UI."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from blocks.environment import ShiplineEnvironment
from shipline.docker import docker_client
from shipline.errors import AutoTestError
from shipline.release.autotest import CheckResult, in_release_image, run_auto_tests
from shipline.spec import AutoTests


@task(cache_policy=NO_CACHE)
def run_release_tests(
    app: str, env: str, base_urls: list[str], tests: AutoTests, image: str, environment: ShiplineEnvironment
) -> list[CheckResult]:
    """Run the HTTP checks and the test command against every new instance, directly (not through nginx:
    no instance of the release takes traffic before they all pass); fail if any check fails anywhere.

    The command runs with the job memory, CPUs and user of the environment's block."""
    rows, failed, results = [], [], []
    runner = in_release_image(
        docker_client(environment.docker_host),
        image,
        get_run_logger().info,
        resources=environment.job_resources(env),
        user=environment.job_user,
    )
    for base_url in base_urls:
        for result in run_auto_tests(base_url, tests, runner):
            results.append(result)
            rows.append({"instance": base_url, **result.model_dump(), "seconds": round(result.seconds, 3)})
            if not result.passed:
                failed.append(f"{result.name} on {base_url}: {result.detail}")
    create_table_artifact(
        key=f"autotest-{app}-{env}",
        table=rows,
        description=f"Auto-tests of {app} in {env} on each of its {len(base_urls)} new instance(s)",
    )
    if failed:
        raise AutoTestError(
            f"{app}/{env}: {len(failed)} of {len(results)} auto-test(s) failed: {'; '.join(failed)}"
        )
    return results
