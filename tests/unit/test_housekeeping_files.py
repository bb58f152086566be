"""Which workspaces and release directories housekeeping removes, found on disk in a temporary home."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shipline.errors import ServiceUnavailableError
from shipline.housekeeping.files import (
    REMOVING,
    carry_out,
    scan_release_dirs,
    scan_workspaces,
    select_release_dirs,
    select_workspaces,
    sweep_release_dirs,
    sweep_workspaces,
)
from shipline.housekeeping.report import Action
from shipline.release.history import Release, ReleaseStatus
from shipline.sizes import tree_usage

NOW = datetime(2026, 11, 25, 3, 30, tzinfo=UTC)
DIGEST = "sha256:" + "a" * 64


def make_tree(path: Path, *, days_old: float, files: Mapping[str, str] | None = None) -> Path:
    """A directory holding ``files``, all of it last modified ``days_old`` days before NOW."""
    path.mkdir(parents=True)
    for name, text in (files or {"file": "x"}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    age(path, days_old)
    return path


def age(path: Path, days_old: float) -> None:
    """Set the modification time of ``path`` and everything in it (deepest first)."""
    moment = (NOW - timedelta(days=days_old)).timestamp()
    for entry in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        os.utime(entry, (moment, moment), follow_symlinks=False)
    os.utime(path, (moment, moment))


def release(app: str, env: str, number: int, status: ReleaseStatus) -> Release:
    return Release(
        app=app, env=env, number=number, status=status, image=f"r/apps/{app}", digest=DIGEST, sha="f" * 40
    )


def no_run_going_on(ids: Collection[str]) -> dict[str, str]:
    return {}


def test_a_workspace_goes_past_its_retention_unless_its_run_is_still_going_on(tmp_path: Path) -> None:
    workspaces = tmp_path / "workspaces"
    make_tree(workspaces / "run-done", days_old=8)
    make_tree(workspaces / "run-paused", days_old=30)  # a delivery waiting for its PROD approval
    make_tree(workspaces / "run-young", days_old=6.9)
    make_tree(workspaces / f"{REMOVING}run-interrupted", days_old=0)
    found = scan_workspaces(workspaces, home=tmp_path)

    decisions = select_workspaces(found, now=NOW, retention_days=7, unfinished={"run-paused": "Paused"})

    removed = {d.directory.path.name: d.reason for d in decisions if d.remove}
    kept = {d.directory.path.name: d.reason for d in decisions if not d.remove}
    assert set(removed) == {"run-done", f"{REMOVING}run-interrupted"}
    assert "untouched for 8.0 days (retention 7 days)" in removed["run-done"]
    assert kept["run-paused"].startswith("in use: its delivery run is Paused")
    assert kept["run-young"] == "written 6.9 days ago (retention 7 days)"
    assert {d.directory.name for d in decisions} == {f"workspaces/{name}" for name in removed | kept}


def test_the_newest_write_anywhere_in_a_workspace_is_its_age(tmp_path: Path) -> None:
    workspaces = tmp_path / "workspaces"
    workspace = make_tree(workspaces / "w", days_old=20, files={"src/app.py": "x", "build/out/app.jar": "y"})
    (workspace / "link").symlink_to(make_tree(tmp_path / "elsewhere", days_old=0))  # links are not followed
    age(workspace, 20)
    moment = (NOW - timedelta(days=1)).timestamp()
    os.utime(workspace / "build" / "out" / "app.jar", (moment, moment))  # a build writes deep inside

    newest, used = tree_usage(workspace)

    assert newest == moment
    assert 2 * 512 <= used < 64 * 1024  # the two files, not what the link points to
    (decision,) = select_workspaces(
        scan_workspaces(workspaces, home=tmp_path), now=NOW, retention_days=7, unfinished={}
    )
    assert decision.directory.path == workspace and not decision.remove
    assert decision.reason == "written 1.0 days ago (retention 7 days)"


def test_only_real_directories_are_workspaces(tmp_path: Path) -> None:
    workspaces = tmp_path / "workspaces"
    make_tree(workspaces / "run", days_old=9)
    target = make_tree(tmp_path / "precious", days_old=90)
    (workspaces / "link-to-precious").symlink_to(target)
    (workspaces / "stray-file").write_text("not a workspace")
    make_tree(workspaces / ".hidden-by-someone", days_old=90)

    assert [d.path.name for d in scan_workspaces(workspaces, home=tmp_path)] == ["run"]
    assert scan_workspaces(tmp_path / "missing", home=tmp_path) == []


def test_a_release_directory_stays_while_its_release_is_live_or_deploying(tmp_path: Path) -> None:
    releases = tmp_path / "releases"
    for number in (1, 2, 3, 4, 5):
        make_tree(releases / "shop" / "prod" / str(number), days_old=40, files={"docker-compose.yml": "x"})
    make_tree(releases / "shop" / "pre" / "9", days_old=2, files={"docker-compose.yml": "x"})
    records = [
        release("shop", "prod", 1, ReleaseStatus.SUPERSEDED),
        release("shop", "prod", 2, ReleaseStatus.ROLLED_BACK),
        release("shop", "prod", 3, ReleaseStatus.LIVE),
        release("shop", "prod", 4, ReleaseStatus.DEPLOYING),
        release("shop", "pre", 9, ReleaseStatus.SUPERSEDED),
        release("shop", "pre", 5, ReleaseStatus.LIVE),  # same number in another environment
    ]
    found = scan_release_dirs(releases, home=tmp_path)

    decisions = select_release_dirs(found, now=NOW, retention_days=30, releases=records)

    by_name = {d.directory.name: d for d in decisions}
    assert {name for name, d in by_name.items() if d.remove} == {
        "releases/shop/prod/1",
        "releases/shop/prod/2",
        "releases/shop/prod/5",
    }
    assert by_name["releases/shop/prod/3"].reason == "release 3 is live in prod"
    assert by_name["releases/shop/prod/4"].reason == "release 4 is being deployed to prod"
    assert by_name["releases/shop/prod/1"].reason.endswith("release 1 is superseded")
    assert by_name["releases/shop/prod/5"].reason.endswith("no release record")
    assert by_name["releases/shop/pre/9"].reason == "written 2.0 days ago (retention 30 days)"


def test_only_app_env_number_directories_are_release_directories(tmp_path: Path) -> None:
    releases = tmp_path / "releases"
    make_tree(releases / "shop" / "prod" / "7", days_old=50)
    make_tree(releases / "shop" / "prod" / f"{REMOVING}6", days_old=0)
    make_tree(releases / "shop" / "prod" / "notes", days_old=50)
    make_tree(releases / "Shop" / "prod" / "1", days_old=50)
    make_tree(releases / "shop" / "pr od" / "1", days_old=50)
    found = scan_release_dirs(releases, home=tmp_path)
    assert [(d.name, d.release, d.leftover) for d in found] == [
        ("releases/shop/prod/.removing-6", ("shop", "prod", 6), True),
        ("releases/shop/prod/7", ("shop", "prod", 7), False),
    ]
    (leftover, _) = select_release_dirs(found, now=NOW, retention_days=30, releases=[])
    assert leftover.remove and leftover.reason == "left by an interrupted removal"


def test_removal_renames_first_and_a_dry_run_removes_nothing(tmp_path: Path) -> None:
    workspaces = tmp_path / "workspaces"
    make_tree(workspaces / "old", days_old=10, files={"a/b/c.txt": "x" * 5000})
    decisions = select_workspaces(
        scan_workspaces(workspaces, home=tmp_path), now=NOW, retention_days=7, unfinished={}
    )
    lines: list[str] = []

    (dry,) = carry_out(decisions, dry_run=True, log=lines.append)
    assert dry.action is Action.WOULD_REMOVE and (workspaces / "old").is_dir() and lines == []

    (done,) = carry_out(decisions, dry_run=False, log=lines.append)
    assert done.action is Action.REMOVED and done.bytes >= 5000
    assert list(workspaces.iterdir()) == []
    assert lines == [f"removed workspace workspaces/old ({done.bytes} bytes): {done.reason}"]


def test_a_removal_that_fails_is_a_failed_row_and_the_others_go_on(tmp_path: Path) -> None:
    workspaces = tmp_path / "workspaces"
    make_tree(workspaces / "a", days_old=10)
    make_tree(workspaces / "b", days_old=10)
    decisions = select_workspaces(
        scan_workspaces(workspaces, home=tmp_path), now=NOW, retention_days=7, unfinished={}
    )
    (workspaces / "a" / "file").unlink()
    (workspaces / "a").rmdir()  # gone before the removal: renaming it fails
    lines: list[str] = []

    failed, removed = carry_out(decisions, dry_run=False, log=lines.append)

    assert failed.action is Action.FAILED and "removing it failed" in failed.reason
    assert removed.action is Action.REMOVED and not (workspaces / "b").exists()
    assert lines[0].startswith("could not remove workspace workspaces/a:")


def test_workspaces_are_left_alone_when_prefect_cannot_tell_which_runs_go_on(tmp_path: Path) -> None:
    workspaces = tmp_path / "workspaces"
    make_tree(workspaces / "old", days_old=100)

    def prefect_down(ids: Collection[str]) -> dict[str, str]:
        raise ServiceUnavailableError("the Prefect API does not answer")

    with pytest.raises(ServiceUnavailableError):
        sweep_workspaces(
            workspaces,
            home=tmp_path,
            now=NOW,
            retention_days=7,
            dry_run=False,
            log=print,
            unfinished_runs=prefect_down,
        )
    assert (workspaces / "old").is_dir()


def test_the_sweeps_ask_about_the_runs_they_found_and_remove_what_they_decided(tmp_path: Path) -> None:
    make_tree(tmp_path / "workspaces" / "r1", days_old=9)
    make_tree(tmp_path / "workspaces" / "r2", days_old=9)
    make_tree(tmp_path / "releases" / "shop" / "pre" / "1", days_old=31)
    asked: list[list[str]] = []

    def r2_running(ids: Collection[str]) -> dict[str, str]:
        asked.append(sorted(ids))
        return {"r2": "Running"}

    workspaces = sweep_workspaces(
        tmp_path / "workspaces",
        home=tmp_path,
        now=NOW,
        retention_days=7,
        dry_run=False,
        log=print,
        unfinished_runs=r2_running,
    )
    release_dirs = sweep_release_dirs(
        tmp_path / "releases",
        home=tmp_path,
        now=NOW,
        retention_days=30,
        releases=[],
        dry_run=False,
        log=print,
    )

    assert asked == [["r1", "r2"]]
    assert [(i.name, i.action) for i in workspaces] == [
        ("workspaces/r1", Action.REMOVED),
        ("workspaces/r2", Action.KEPT),
    ]
    assert [(i.name, i.action) for i in release_dirs] == [("releases/shop/pre/1", Action.REMOVED)]
    assert not (tmp_path / "releases" / "shop" / "pre" / "1").exists()
    assert (
        sweep_workspaces(
            tmp_path / "none",
            home=tmp_path,
            now=NOW,
            retention_days=7,
            dry_run=False,
            log=print,
            unfinished_runs=no_run_going_on,
        )
        == []
    )
