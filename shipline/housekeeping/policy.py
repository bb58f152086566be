"""What a housekeeping run keeps: the operator's settings, as the code below takes them."""

from __future__ import annotations

from pydantic import BaseModel, Field


class HousekeepingPolicy(BaseModel):
    """The settings of one run. Their defaults and descriptions are the ``shipline-housekeeping`` block's
    (``blocks/housekeeping.py``), where operators edit them."""

    workspace_retention_days: float = Field(gt=0)
    release_dir_retention_days: float = Field(gt=0)
    keep_images_per_app: int = Field(ge=1)
    dry_run: bool
    reclaim_blob_space: bool
