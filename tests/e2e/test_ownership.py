"""Who may ship an app: its first delivery (or `shipline apps add`) binds the name to a repository; a delivery
from another repository whose spec claims that name fails at the spec stage, naming both; an operator's
`shipline apps transfer` moves the app, after which only the new repository ships it."""

from __future__ import annotations

import shutil
from pathlib import Path

from shipline.build.sources import resolve_source
from shipline.config import Settings
from shipline.delivery import RunReport, follow_delivery
from tests.cli import shipline


def build_only(source: str) -> RunReport:
    return follow_delivery(source, ref=None, environments=[], quiet=True, echo=print)


def test_a_second_repository_cannot_ship_an_app_until_an_operator_transfers_it(
    settings: Settings, sample: Path, tmp_path: Path
) -> None:
    app = sample.name
    first = resolve_source(str(sample), sources_dir=settings.home / "sources")
    done = build_only(first)
    assert done.state == "Completed", done
    listed = shipline("apps", "list")
    assert app in listed.stdout and "(bound by its first delivery)" in listed.stdout, listed.stdout

    # Another team's repository whose shipline.yaml says the same app name.
    impostor = tmp_path / f"{app}-fork"
    shutil.copytree(sample, impostor)
    second = resolve_source(str(impostor), sources_dir=settings.home / "sources")
    refused = build_only(second)
    assert refused.state == "Failed", refused
    assert refused.stages["read_app_spec"] == "Failed"
    assert f"app {app} belongs to {first}" in str(refused.message) and second in str(refused.message), (
        refused.message
    )
    assert "compile_app" not in refused.stages

    # `apps add` refuses it too; an operator's transfer moves it.
    added = shipline("apps", "add", second)
    assert added.returncode == 1 and f"app {app} belongs to {first}" in added.stderr, added.stderr
    moved = shipline("apps", "transfer", second)
    assert moved.returncode == 0, moved.stderr
    assert f"{app} now belongs to {second}" in moved.stdout
    assert build_only(second).state == "Completed"
    old = build_only(first)
    assert old.state == "Failed" and f"app {app} belongs to {second}" in str(old.message), old.message
    shipline("apps", "remove", app)
