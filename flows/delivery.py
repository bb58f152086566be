"""Flow: from a commit to a scanned image digest, released to PRE and then, unchanged, to PROD."""

from __future__ import annotations

from prefect import flow

from shipline.delivery import DeliverySummary
from shipline.gitlab.statuses import STAGES, commit_statuses, reporting_to_gitlab
from shipline.release.plan import request_from_spec
from tasks.base_images import prepare_base_layers
from tasks.checkout import checkout_source
from tasks.compile import compile_app
from tasks.image import build_app_layer, push_app_image
from tasks.promote import release_to
from tasks.scan import scan_source
from tasks.spec import read_app_spec
from tasks.unit_test import run_unit_tests


@flow(name="delivery")
def delivery(source: str, ref: str | None = None, environments: list[str] | None = None) -> DeliverySummary:
    """Deliver one commit of an app: checkout, compile, unit test, scan, layered image, push, release.

    The app named in shipline.yaml must belong to the repository delivered (`shipline apps list`).

    Every stage is a task run below, with its log and artifacts (unit-test table, scan summary, image
    digest). The same digest goes to each environment in turn (default PRE, then PROD) through that
    environment's `release` deployment; a failed release stops the delivery there. Unit tests and scan are
    held to the gates of the `ci` block and of each target environment's block (tests required, scan
    tools and their limits, SonarQube): a spec may be stricter, never looser. An app onboarded from
    a GitLab project gets a commit status per stage (`shipline/<stage>`) linking back to this run.
    """
    code = checkout_source(source, ref)
    envs = environments if environments is not None else ["pre", "prod"]
    spec = read_app_spec(code.workspace, envs, source)
    with reporting_to_gitlab(commit_statuses(spec.app, code.sha), [*STAGES.values(), *envs]):
        layers = prepare_base_layers(spec.image)
        artifact = compile_app(spec, code.workspace, layers.middleware, code.sha)
        run_unit_tests(spec, code.workspace, layers.middleware, code.sha, envs)
        scan_source(spec, code.workspace, envs)
        built = build_app_layer(
            spec, artifact, code.workspace, layers.middleware, code.sha, code.committed, source
        )
        image = push_app_image(spec, built, layers)
        released = {}
        for env in envs:
            request = request_from_spec(
                spec,
                env=env,
                image=image.repository,
                digest=image.digest,
                sha=code.sha,
                committed=code.committed,
            )
            released[env] = release_to(request).number
    return DeliverySummary(
        app=spec.app,
        sha=code.sha,
        source=source,
        image=image.repository,
        digest=image.digest,
        releases=released,
    )
