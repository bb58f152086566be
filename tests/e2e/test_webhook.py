"""GitLab to PROD through the running web service: a documented push payload starts one delivery, the
commit gets a status per stage, bad requests start nothing, and a push whose event was lost is delivered
once by the reconcile flow.

GitLab itself cannot run here: the fake GitLab (``tests/fake_gitlab.py``) speaks its v4 API to
python-gitlab; the payloads are GitLab's documented examples (``tests/gitlab_payloads.py``) retargeted at
this test's project.
"""

from __future__ import annotations

import copy
import json
import subprocess
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowRunFilter,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun
from pydantic import SecretStr

from blocks.gitlab import ShiplineGitLab
from shipline.build.sources import resolve_source
from shipline.config import Settings
from shipline.docker import docker_client
from shipline.flow_runs import run_deployment_and_wait
from shipline.gitlab.statuses import STAGES
from shipline.release.lifecycle import release_history
from tests.cli import shipline
from tests.fake_gitlab import FakeGitLab
from tests.gitlab_payloads import PUSH, headers
from tests.secrets_check import containers_holding, files_holding, places_holding, run_tree
from tests.waiting import eventually

SECRET = f"webhook-secret-{uuid.uuid4().hex}"


@pytest.fixture
def fake_gitlab() -> Iterator[FakeGitLab]:
    """A fake GitLab whose token is this test's own: no earlier run can have left it in a log."""
    with FakeGitLab(token=f"glpat-{uuid.uuid4().hex[:20]}") as fake:
        yield fake


@pytest.fixture
def onboarded(app: str) -> Iterator[str]:
    """The test's app, offboarded afterwards so that no later reconcile looks for its project."""
    yield app
    shipline("apps", "remove", app)


@pytest.fixture
def gitlab_block(fake_gitlab: FakeGitLab) -> Iterator[ShiplineGitLab]:
    """The shipline-gitlab block pointing at the fake GitLab; the operator's own put back afterwards."""
    original = ShiplineGitLab.configured()
    block = ShiplineGitLab(
        url=fake_gitlab.url, token=SecretStr(fake_gitlab.token), webhook_secret=SecretStr(SECRET)
    )
    block.save("default", overwrite=True)
    yield block
    if original is not None:
        original.save("default", overwrite=True)
    else:
        with get_client(sync_client=True) as client:
            document = client.read_block_document_by_name("default", "shipline-gitlab", include_secrets=False)
            client.delete_block_document(document.id)


def git_head(repository: str) -> str:
    done = subprocess.run(
        ["git", "--git-dir", repository, "rev-parse", "main"], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def push_payload(project: str, sha: str, before: str = "0" * 39 + "1") -> dict[str, Any]:
    payload = copy.deepcopy(PUSH)
    payload.update(ref="refs/heads/main", before=before, after=sha, checkout_sha=sha)
    payload["project"]["path_with_namespace"] = project
    return payload


def post(settings: Settings, payload: dict[str, Any], **header: str) -> httpx.Response:
    sent = {**headers("Push Hook", SECRET), **header}
    return httpx.post(settings.webhook_url, content=json.dumps(payload), headers=sent, timeout=10)


def delivery_runs(tag: str) -> list[FlowRun]:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])))


def finished(run_id: str) -> FlowRun | None:
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(run_id))
    return run if run.state is not None and run.state.is_final() else None


def test_a_push_is_delivered_to_prod_and_reported_on_its_commit(
    settings: Settings,
    tmp_path: Path,
    sample: Path,
    onboarded: str,
    fake_gitlab: FakeGitLab,
    gitlab_block: ShiplineGitLab,
) -> None:
    app = onboarded
    project = f"group/{app}"
    repository = resolve_source(str(sample), sources_dir=tmp_path / "sources")
    sha = git_head(repository)
    # Served over HTTP like a private GitLab project: onboarding and every checkout need the token.
    fake_gitlab.add_project(project, branches={"main": sha}, serve=repository)
    clone_url = f"{fake_gitlab.url}/{project}.git"

    added = shipline("apps", "add", clone_url, "--project", project, "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["webhook"] == "created"
    (hook,) = fake_gitlab.hooks(project)
    assert hook["url"] == settings.webhook_url and hook["push_events"] and hook["merge_requests_events"]

    def accepted() -> httpx.Response | None:
        answer = post(settings, push_payload(project, sha), **{"Idempotency-Key": "k1"})
        stale = answer.status_code == 401 or "is not onboarded" in answer.text
        return None if stale else answer

    # The web service reads the block and the onboarded apps at most once a second: wait until it has
    # taken the new secret and the new app (an answer until then starts nothing).
    first = eventually(accepted, timeout=5, what="the web service to accept the block's new webhook secret")
    assert first.status_code == 202, first.text
    run_id = first.json()["flow_run_id"]
    assert first.json()["url"].endswith(f"/runs/flow-run/{run_id}")
    again = post(settings, push_payload(project, sha), **{"Idempotency-Key": "k1"})
    assert (again.status_code, again.json()["flow_run_id"]) == (200, run_id)

    refused = [
        post(settings, push_payload(project, sha), **{"X-Gitlab-Token": "wrong"}).status_code,
        httpx.post(
            settings.webhook_url, content=b"{" * (1024 * 1024 + 1), headers=headers("Push Hook", SECRET)
        ).status_code,
        httpx.post(
            settings.webhook_url, content=b"not json", headers=headers("Push Hook", SECRET)
        ).status_code,
        post(settings, push_payload(project, sha), **{"X-Gitlab-Event": "Pipeline Hook"}).status_code,
    ]
    assert refused == [401, 413, 400, 400]
    assert [str(r.id) for r in delivery_runs(f"project:{project}")] == [run_id]

    run = eventually(
        lambda: finished(run_id), timeout=600, interval=1, what=f"delivery run {run_id} to finish"
    )
    assert run.state is not None and run.state.is_completed(), run.state
    target = f"{settings.prefect_url}/runs/flow-run/{run_id}"
    for stage in [*STAGES.values(), "pre", "prod"]:
        assert fake_gitlab.status_history(project, sha, f"shipline/{stage}") == [
            "pending",
            "running",
            "success",
        ]
    assert {p.target_url for p in fake_gitlab.project(project).statuses[sha]} == {target}
    assert ("GET", f"/{project}.git/info/refs") in fake_gitlab.requests  # checked out with the token
    # No secret in any log line, artifact, parameter or state message of the delivery and its releases,
    # nor in the stack's logs: neither the GitLab token nor the webhook secret.
    runs = run_tree(UUID(run_id))
    assert len(runs) == 3  # the delivery, release-to-pre, release-to-prod
    logs = list(settings.log_dir.glob("*.log"))
    for secret in (fake_gitlab.token, SECRET):
        assert places_holding(secret, runs, logs) == []
        # nor in the delivery's workspace (no token in .git/config), nor in any container definition
        assert files_holding(secret, settings.workspaces_dir / run_id) == []
        assert containers_holding(secret, docker_client(settings.docker_url), app) == []
    (comment,) = fake_gitlab.comments(project, sha)
    (prod,) = release_history(app, "prod", etcd_url=settings.etcd_url)
    release_run = f"{settings.prefect_url}/runs/flow-run/{prod.flow_run_id}"  # the run that made it live
    assert (
        "released in prod" in comment and sha in comment and prod.digest in comment and release_run in comment
    )

    # A push whose event never arrived (the receiver was down): the reconcile flow delivers it, once.
    (sample / "app" / "NOTES").write_text("a commit pushed while the webhook receiver was down\n")
    missed = git_head(resolve_source(str(sample), sources_dir=tmp_path / "sources"))
    fake_gitlab.advance_branch(project, "main", missed)
    outcomes = []
    for _ in range(2):
        reconcile = run_deployment_and_wait("gitlab-reconcile/reconcile-gitlab-every-5-minutes", timeout=120)
        assert reconcile.state is not None and reconcile.state.is_completed(), reconcile.state
        outcomes.append({c.app: c.outcome for c in reconcile.state.result()}[app])
    assert outcomes == ["started", "already delivered"]
    (reconciled,) = delivery_runs(f"sha:{missed}")
    late = post(settings, push_payload(project, missed, before=sha), **{"Idempotency-Key": "k2"})
    assert (late.status_code, late.json()["flow_run_id"]) == (200, str(reconciled.id))
    done = eventually(
        lambda: finished(str(reconciled.id)), timeout=600, interval=1, what="the reconciled delivery"
    )
    assert done.state is not None and done.state.is_completed(), done.state


def test_the_reconcile_deployment_runs_every_five_minutes(settings: Settings) -> None:
    with get_client(sync_client=True) as client:
        (deployment,) = client.read_deployments(
            deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(any_=["reconcile-gitlab-every-5-minutes"])
            )
        )
    (schedule,) = deployment.schedules
    assert schedule.active
    assert schedule.schedule.model_dump().get("interval") == timedelta(seconds=300)
