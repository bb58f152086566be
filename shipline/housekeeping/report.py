"""The rows of a housekeeping run's table: each thing it looked at, what it did, why, and the bytes."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, computed_field

from shipline.sizes import human_bytes


class Kind(StrEnum):
    WORKSPACE = "workspace"
    RELEASE_DIR = "release dir"
    IMAGE = "image"
    BLOB_SPACE = "blob space"


class Action(StrEnum):
    REMOVED = "removed"
    KEPT = "kept"
    WOULD_REMOVE = "would be removed (dry run)"
    FAILED = "failed"


class Item(BaseModel):
    """One thing housekeeping looked at: a row of the run's table."""

    kind: Kind
    name: str
    """A directory relative to Shipline's home, or ``apps/{app}@{digest}``."""
    action: Action
    reason: str
    bytes: int = 0
    """Freed when removed; held when kept (for an image: the blobs no kept image shares)."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def size(self) -> str:
        return human_bytes(self.bytes)


def freed_bytes(items: Sequence[Item]) -> int:
    """What the removed items freed (for images: what the registry's blob collection can free)."""
    return sum(item.bytes for item in items if item.action is Action.REMOVED)


def removed_images(items: Sequence[Item]) -> int:
    """How many images were deleted from the registry."""
    return sum(item.kind is Kind.IMAGE and item.action is Action.REMOVED for item in items)


def failures(items: Sequence[Item]) -> list[Item]:
    return [item for item in items if item.action is Action.FAILED]


def summary(items: Sequence[Item], *, dry_run: bool) -> str:
    """One line for the table's description and the CLI: how many of each kind went, and the bytes."""
    done = Action.WOULD_REMOVE if dry_run else Action.REMOVED
    parts = []
    for kind in Kind:
        mine = [item for item in items if item.kind is kind]
        if not mine or kind is Kind.BLOB_SPACE:
            continue
        gone = [item for item in mine if item.action is done]
        parts.append(
            f"{len(gone)} of {len(mine)} {kind.value}s {'to remove' if dry_run else 'removed'} "
            f"({human_bytes(sum(item.bytes for item in gone))})"
        )
    blobs = [item for item in items if item.kind is Kind.BLOB_SPACE]
    parts += [f"blob space: {item.reason}" for item in blobs]
    failed = failures(items)
    if failed:
        parts.append(f"{len(failed)} failed")
    return "; ".join(parts) or "nothing to look at"


def table(items: Sequence[Item]) -> list[dict[str, Any]]:
    """The rows as the table artifact shows them: removed and failed first, then what was kept."""
    order = {Action.FAILED: 0, Action.REMOVED: 1, Action.WOULD_REMOVE: 1, Action.KEPT: 2}
    ranked = sorted(items, key=lambda item: (order[item.action], list(Kind).index(item.kind), item.name))
    return [item.model_dump(mode="json") for item in ranked]
