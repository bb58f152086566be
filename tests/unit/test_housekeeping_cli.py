"""`shipline housekeeping` and `shipline registry gc`: the block's policy and its defaults, the overrides, the
output, the exit code."""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from blocks.housekeeping import ShiplineHousekeeping
from blocks.registry import ShiplineRegistry
from shipline import cli
from shipline.config import Settings
from shipline.errors import StackError
from shipline.housekeeping.policy import HousekeepingPolicy
from shipline.housekeeping.report import Action, Item, Kind
from shipline.stack.registry_maintenance import BlobCollection

runner = CliRunner()


class FakeHousekeep:
    """Stands for the run: records what it was given and answers ``items``."""

    def __init__(self, items: list[Item]) -> None:
        self.items = items
        self.calls: list[dict[str, Any]] = []

    def __call__(
        self,
        settings: Settings,
        policy: HousekeepingPolicy,
        registry: Any,
        *,
        apps: Collection[str] | None = None,
        log: Any = print,
    ) -> list[Item]:
        self.calls.append({"policy": policy, "registry": registry.address, "apps": apps})
        log("removed workspace workspaces/r1 (2048 bytes): old")
        return self.items


@pytest.fixture
def blocks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHIPLINE_HOME", str(tmp_path))
    monkeypatch.setattr(ShiplineHousekeeping, "current", classmethod(lambda cls: cls(keep_images_per_app=3)))
    monkeypatch.setattr(ShiplineRegistry, "current", classmethod(lambda cls: cls(address="r.test:5000")))


ITEMS = [
    Item(kind=Kind.WORKSPACE, name="workspaces/r1", action=Action.REMOVED, reason="old", bytes=2048),
    Item(
        kind=Kind.IMAGE, name="apps/a@sha256:1", action=Action.KEPT, reason="live in prod release 1", bytes=9
    ),
]


def test_the_block_policy_runs_and_removals_are_listed(monkeypatch: pytest.MonkeyPatch, blocks: None) -> None:
    fake = FakeHousekeep(ITEMS)
    monkeypatch.setattr("shipline.housekeeping.sweep.housekeep", fake)

    result = runner.invoke(cli.app, ["housekeeping", "--app", "a", "--app", "b"])

    assert result.exit_code == 0, result.output
    (call,) = fake.calls
    assert call["policy"] == ShiplineHousekeeping(keep_images_per_app=3).policy()
    assert (call["registry"], call["apps"]) == ("r.test:5000", ["a", "b"])
    lines = result.output.splitlines()
    assert lines[0] == "removed workspace workspaces/r1 (2048 bytes): old"
    assert lines[1].split() == ["removed", "workspace", "2.0", "KiB", "workspaces/r1", "(old)"]
    assert "apps/a@sha256:1" not in result.output  # kept: shown with --kept
    assert lines[-1] == "1 of 1 workspaces removed (2.0 KiB); 0 of 1 images removed (0 B)"
    assert "apps/a@sha256:1" in runner.invoke(cli.app, ["housekeeping", "--kept"]).output


def test_dry_run_overrides_the_block_and_json_keeps_stdout_for_the_document(
    monkeypatch: pytest.MonkeyPatch, blocks: None
) -> None:
    fake = FakeHousekeep(ITEMS)
    monkeypatch.setattr("shipline.housekeeping.sweep.housekeep", fake)

    result = runner.invoke(cli.app, ["housekeeping", "--dry-run", "--json"])

    assert result.exit_code == 0, result.output
    assert fake.calls[0]["policy"].dry_run is True and fake.calls[0]["apps"] is None
    document = json.loads(result.stdout)
    assert document["policy"]["dry_run"] is True and document["policy"]["keep_images_per_app"] == 3
    assert [i["name"] for i in document["items"]] == ["workspaces/r1", "apps/a@sha256:1"]
    assert "removed workspace workspaces/r1" in result.stderr


def test_a_failed_removal_exits_1(monkeypatch: pytest.MonkeyPatch, blocks: None) -> None:
    failed = Item(kind=Kind.RELEASE_DIR, name="releases", action=Action.FAILED, reason="etcd does not answer")
    monkeypatch.setattr("shipline.housekeeping.sweep.housekeep", FakeHousekeep([*ITEMS, failed]))
    result = runner.invoke(cli.app, ["housekeeping"])
    assert result.exit_code == 1
    assert "failed" in result.output and "etcd does not answer" in result.output


def test_registry_gc_reports_what_it_freed_or_why_it_cannot(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SHIPLINE_HOME", str(tmp_path))
    done = BlobCollection(
        registry="127.0.0.1:5000",
        dry_run=False,
        blobs_deleted=3,
        bytes_before=5 * 2**20,
        bytes_after=2**20,
        read_only_seconds=1.25,
    )
    monkeypatch.setattr("shipline.stack.registry_maintenance.collect_blob_space", lambda *a, **k: done)
    result = runner.invoke(cli.app, ["registry", "gc"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        "registry 127.0.0.1:5000: 3 unreferenced blob(s) deleted, 4.0 MiB freed; pushes waited 1.2s."
    )
    assert json.loads(runner.invoke(cli.app, ["registry", "gc", "--json"]).stdout)["freed"] == 4 * 2**20

    def not_here(*args: object, **kwargs: object) -> BlobCollection:
        raise StackError(
            "registry: not started by `shipline up` on this host", hint="run garbage-collect there"
        )

    monkeypatch.setattr("shipline.stack.registry_maintenance.collect_blob_space", not_here)
    refused = runner.invoke(cli.app, ["registry", "gc"])
    assert refused.exit_code == 1 and "hint: run garbage-collect there" in refused.output


def test_the_block_defaults_are_the_documented_policy() -> None:
    assert ShiplineHousekeeping().policy() == HousekeepingPolicy(
        workspace_retention_days=7,
        release_dir_retention_days=30,
        keep_images_per_app=10,
        dry_run=False,
        reclaim_blob_space=True,
    )
    with pytest.raises(ValueError, match="keep_images_per_app"):
        ShiplineHousekeeping(keep_images_per_app=0)
