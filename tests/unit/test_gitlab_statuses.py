"""Commit statuses of a delivery: pending for every stage, then each stage follows its task's state."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prefect.states import Completed, Failed, Running
from pydantic import SecretStr

from shipline.gitlab.api import GitLabProject
from shipline.gitlab.statuses import CommitStatuses, report_stage, reporting_to_gitlab, stage_of
from tests.fake_gitlab import FakeGitLab

SHA = "1" * 40
PROJECT = "group/shop"


def statuses(fake: FakeGitLab, warnings: list[str]) -> CommitStatuses:
    fake.add_project(PROJECT, branches={"main": SHA})
    project = GitLabProject.connect(fake.url, SecretStr(fake.token), PROJECT)
    return CommitStatuses(
        project, SHA, target_url="http://127.0.0.1:4200/runs/flow-run/1", warn=warnings.append
    )


def hook(task: str, state: object, run_name: str | None = None) -> None:
    report_stage(SimpleNamespace(name=task), SimpleNamespace(name=run_name or f"{task}-abc"), state)


def test_each_stage_goes_pending_running_success(fake_gitlab: FakeGitLab) -> None:
    warnings: list[str] = []
    with reporting_to_gitlab(statuses(fake_gitlab, warnings), ["build", "pre"]):
        hook("compile_app", Running())
        hook("compile_app", Completed())
        hook("release_to", Running(), run_name="release-to-pre")
        hook("release_to", Completed(), run_name="release-to-pre")
        hook("not_a_stage", Running())  # a task that is not a stage reports nothing
    assert fake_gitlab.status_history(PROJECT, SHA, "shipline/build") == ["pending", "running", "success"]
    assert fake_gitlab.status_history(PROJECT, SHA, "shipline/pre") == ["pending", "running", "success"]
    assert {p.target_url for p in fake_gitlab.project(PROJECT).statuses[SHA]} == {
        "http://127.0.0.1:4200/runs/flow-run/1"
    }
    assert warnings == []


def test_a_failure_fails_its_stage_and_cancels_the_stages_never_run(fake_gitlab: FakeGitLab) -> None:
    with pytest.raises(RuntimeError), reporting_to_gitlab(statuses(fake_gitlab, []), ["unit-test", "scan"]):
        hook("run_unit_tests", Running())
        hook("run_unit_tests", Failed())
        raise RuntimeError("the flow stops here")
    assert fake_gitlab.status_history(PROJECT, SHA, "shipline/unit-test") == ["pending", "running", "failed"]
    assert fake_gitlab.status_history(PROJECT, SHA, "shipline/scan") == ["pending", "canceled"]


def test_an_undeliverable_status_is_a_warning_not_a_failure(fake_gitlab: FakeGitLab) -> None:
    warnings: list[str] = []
    reporter = statuses(fake_gitlab, warnings)
    fake_gitlab.broken = True
    with reporting_to_gitlab(reporter, ["build"]):
        hook("compile_app", Running())
    assert len(warnings) == 2 and all(
        "shipline/build" in w and "500" in w for w in warnings
    )  # pending, running


def test_outside_a_reporting_block_hooks_do_nothing(fake_gitlab: FakeGitLab) -> None:
    fake_gitlab.add_project(PROJECT, branches={"main": SHA})
    hook("compile_app", Running())
    with reporting_to_gitlab(None, ["build"]):
        hook("compile_app", Running())
    assert fake_gitlab.status_history(PROJECT, SHA, "shipline/build") == []


def test_stage_names() -> None:
    assert stage_of("push_app_image", "push_app_image-3f1") == "push"
    assert stage_of("release_to", "release-to-prod") == "prod"
    assert stage_of("checkout_source", "checkout_source-aaa") is None
