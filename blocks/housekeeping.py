"""Block type for the operator's settings of housekeeping: what old workspaces, release directories and
images the nightly run removes."""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field

from blocks.documents import load_document
from shipline.housekeeping.policy import HousekeepingPolicy

DEFAULT = "default"


class ShiplineHousekeeping(Block):
    """What housekeeping keeps. The housekeeping flow and ``shipline housekeeping`` read the ``default``
    document at each run, so an edit takes effect at the next run."""

    _block_type_name: ClassVar[str] = "Shipline Housekeeping"
    _block_type_slug: ClassVar[str] = "shipline-housekeeping"
    _description: ClassVar[str] = (
        "Housekeeping: days workspaces and release directories are kept, app images kept per app, dry run."
    )

    workspace_retention_days: float = Field(
        default=7,
        gt=0,
        description="Days a delivery's workspace (checkout and build outputs) is kept after its last write; "
        "never removed while its delivery run goes on.",
    )
    release_dir_retention_days: float = Field(
        default=30,
        gt=0,
        description="Days a release's directory (its rendered compose file) is kept; the live release's "
        "directory stays.",
    )
    keep_images_per_app: int = Field(
        default=10,
        ge=1,
        description="N: of each app's images, the N newest released (that went live) and the N newest pushed "
        "stay, with every live one; older ones are deleted from the registry.",
    )
    dry_run: bool = Field(
        default=False, description="Remove nothing; the run's table says what would be removed."
    )
    reclaim_blob_space: bool = Field(
        default=True,
        description="After deleting images, free their space with the registry's garbage-collect (the "
        "stack's own registry, made read-only meanwhile; pushes wait).",
    )

    @classmethod
    def current(cls) -> ShiplineHousekeeping:
        """The settings as an operator last saved them in the ``default`` document.

        Raises:
            ConfigError: if there is none.
        """
        return load_document(
            cls,
            DEFAULT,
            what="no housekeeping settings",
            hint="shipline up creates them; or create a Shipline Housekeeping block named default in the "
            "Prefect UI",
        )

    def policy(self) -> HousekeepingPolicy:
        """The settings as housekeeping's code takes them."""
        return HousekeepingPolicy.model_validate(
            self.model_dump(include=set(HousekeepingPolicy.model_fields))
        )
