"""A whole run in one process: each step fails on its own, and blob space is reclaimed only when it may be."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest

from shipline.build.registry import Registry
from shipline.config import Settings
from shipline.housekeeping import sweep
from shipline.housekeeping.policy import HousekeepingPolicy
from shipline.housekeeping.report import Action, Kind
from shipline.stack.registry_maintenance import BlobCollection
from tests.images import free_ports

POLICY = HousekeepingPolicy(
    workspace_retention_days=7,
    release_dir_retention_days=30,
    keep_images_per_app=10,
    dry_run=False,
    reclaim_blob_space=True,
)


@pytest.fixture
def home(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


def test_blob_space_is_reclaimed_only_after_deletions_in_this_hosts_registry(
    home: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = Registry(address=home.registry_address)
    calls: list[Any] = []

    def collect(settings: Settings, *, report: Any) -> BlobCollection:
        calls.append(settings)
        return BlobCollection(
            registry=settings.registry_address,
            dry_run=False,
            blobs_deleted=4,
            bytes_before=9_000,
            bytes_after=1_000,
            read_only_seconds=0.5,
        )

    monkeypatch.setattr(sweep, "collect_blob_space", collect)

    def reclaim(registry: Registry = ours, removed: int = 2, **changes: Any) -> tuple[Action, str]:
        policy = POLICY.model_copy(update=changes)
        item = sweep.reclaim_blob_space(home, registry, policy=policy, images_removed=removed, log=print)
        assert item.kind is Kind.BLOB_SPACE and item.name == registry.address
        return item.action, item.reason

    assert reclaim(dry_run=True)[1].startswith("dry run")
    assert reclaim(removed=0) == (Action.KEPT, "no image deleted: nothing to collect")
    assert reclaim(reclaim_blob_space=False)[1].startswith("reclaim_blob_space is off")
    other = reclaim(Registry(address="registry.example:5000"))
    assert other[0] is Action.KEPT and "garbage-collect" in other[1]
    assert reclaim()[1].startswith("the registry is not the one this host's stack runs")  # no process record
    assert calls == []

    monkeypatch.setattr(sweep, "managed_registry", lambda settings: True)
    action, reason = reclaim()
    assert (action, reason) == (
        Action.REMOVED,
        "garbage-collect deleted 4 unreferenced blob(s); pushes waited 0.5s",
    )
    assert calls == [home]


def test_a_step_that_fails_is_a_row_and_the_others_still_run(home: Settings, tmp_path: Path) -> None:
    (old := home.workspaces_dir / "old").mkdir(parents=True)
    (closed,) = free_ports(1)
    settings = home.model_copy(update={"etcd_port": closed})  # etcd does not answer
    registry = Registry(address=f"127.0.0.1:{closed}")  # nor does the registry

    def none_going_on(ids: Collection[str]) -> dict[str, str]:
        return {}

    items = sweep.housekeep(
        settings,
        POLICY.model_copy(update={"workspace_retention_days": 1e-9}),
        registry,
        log=print,
        unfinished_runs=none_going_on,
    )

    assert [(i.kind, i.name, i.action) for i in items] == [
        (Kind.WORKSPACE, "workspaces/old", Action.REMOVED),
        (Kind.RELEASE_DIR, "releases", Action.FAILED),
        (Kind.IMAGE, f"127.0.0.1:{closed}", Action.FAILED),
    ]
    assert not old.exists()
    assert "etcd" in items[1].reason and f"registry 127.0.0.1:{closed} does not answer" in items[2].reason
