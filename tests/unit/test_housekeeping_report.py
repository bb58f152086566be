"""The table and the summary line of a housekeeping run."""

from __future__ import annotations

from shipline.housekeeping.report import Action, Item, Kind, failures, freed_bytes, summary, table


def items() -> list[Item]:
    return [
        Item(kind=Kind.IMAGE, name="apps/a@sha256:2", action=Action.KEPT, reason="live", bytes=9_000_000),
        Item(kind=Kind.WORKSPACE, name="workspaces/r2", action=Action.KEPT, reason="young", bytes=10),
        Item(kind=Kind.WORKSPACE, name="workspaces/r1", action=Action.REMOVED, reason="old", bytes=2048),
        Item(kind=Kind.IMAGE, name="apps/a@sha256:1", action=Action.REMOVED, reason="old", bytes=3 * 2**20),
        Item(kind=Kind.RELEASE_DIR, name="releases/a/pre/1", action=Action.FAILED, reason="busy", bytes=5),
        Item(kind=Kind.BLOB_SPACE, name="127.0.0.1:5000", action=Action.REMOVED, reason="2 blobs", bytes=7),
    ]


def test_the_table_shows_failures_first_then_removals_then_what_stayed() -> None:
    rows = table(items())
    assert [(r["action"], r["name"]) for r in rows] == [
        ("failed", "releases/a/pre/1"),
        ("removed", "workspaces/r1"),
        ("removed", "apps/a@sha256:1"),
        ("removed", "127.0.0.1:5000"),
        ("kept", "workspaces/r2"),
        ("kept", "apps/a@sha256:2"),
    ]
    assert rows[1] == {
        "kind": "workspace",
        "name": "workspaces/r1",
        "action": "removed",
        "reason": "old",
        "bytes": 2048,
        "size": "2.0 KiB",
    }


def test_the_summary_counts_each_kind_and_names_failures() -> None:
    assert summary(items(), dry_run=False) == (
        "1 of 2 workspaces removed (2.0 KiB); 0 of 1 release dirs removed (0 B); "
        "1 of 2 images removed (3.0 MiB); blob space: 2 blobs; 1 failed"
    )
    assert freed_bytes(items()) == 2048 + 3 * 2**20 + 7
    assert [i.name for i in failures(items())] == ["releases/a/pre/1"]
    dry = [i.model_copy(update={"action": Action.WOULD_REMOVE}) for i in items()[2:4]]
    assert (
        summary(dry, dry_run=True)
        == "1 of 1 workspaces to remove (2.0 KiB); 1 of 1 images to remove (3.0 MiB)"
    )
    assert summary([], dry_run=False) == "nothing to look at"
