"""Prefect block types for the external systems Shipline drives. Configuration only, no logic."""

from blocks.environment import ShiplineEnvironment
from blocks.gitlab import ShiplineGitLab
from blocks.housekeeping import ShiplineHousekeeping
from blocks.logs import ShiplineLogs
from blocks.registry import ShiplineRegistry
from blocks.sonarqube import ShiplineSonarQube

BLOCK_TYPES = (
    ShiplineEnvironment,
    ShiplineRegistry,
    ShiplineGitLab,
    ShiplineSonarQube,
    ShiplineLogs,
    ShiplineHousekeeping,
)

__all__ = [
    "BLOCK_TYPES",
    "ShiplineEnvironment",
    "ShiplineGitLab",
    "ShiplineHousekeeping",
    "ShiplineLogs",
    "ShiplineRegistry",
    "ShiplineSonarQube",
]
