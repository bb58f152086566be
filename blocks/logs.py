"""Block type for the operator's settings of the log store's maintenance."""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field

from blocks.documents import load_document

DEFAULT = "default"


class ShiplineLogs(Block):
    """How long collected logs are kept. The log-maintenance flow reads the ``default`` document at each
    run, so an edit takes effect at the next run."""

    _block_type_name: ClassVar[str] = "Shipline Logs"
    _block_type_slug: ClassVar[str] = "shipline-logs"
    _description: ClassVar[str] = (
        "Collected logs: days kept (an app's shipline.yaml may keep fewer) and nightly compaction."
    )

    retention_days: int = Field(
        default=14,
        ge=1,
        description="Days of logs kept; older day partitions are dropped by the nightly log-maintenance run.",
    )
    optimize: bool = Field(
        default=True,
        description="Compact every closed day's index (SQLite FTS5 optimize, PostgreSQL VACUUM ANALYZE).",
    )

    @classmethod
    def current(cls) -> ShiplineLogs:
        """The settings as an operator last saved them in the ``default`` document.

        Raises:
            ConfigError: if there is none.
        """
        return load_document(
            cls,
            DEFAULT,
            what="no log settings",
            hint="shipline up creates them; or create a Shipline Logs block named default in the Prefect UI",
        )
