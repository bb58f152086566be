"""Block type for a SonarQube server and the scanner that feeds it."""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class ShiplineSonarQube(Block):
    """A SonarQube server. Without this block, the scan stage runs the app spec's local tools instead."""

    _block_type_name: ClassVar[str] = "Shipline SonarQube"
    _block_type_slug: ClassVar[str] = "shipline-sonarqube"
    _description: ClassVar[str] = (
        "SonarQube: server, token, scanner command and how long to wait for the gate."
    )

    url: str = Field(description="Base URL, e.g. https://sonar.example.com")
    token: SecretStr = Field(description="Token with Execute Analysis and Browse permission.")
    scanner_command: list[str] = Field(
        default_factory=lambda: ["sonar-scanner"],
        description="Scanner CLI; it receives -Dsonar.* properties and SONAR_TOKEN in its environment.",
    )
    gate_timeout_seconds: float = Field(default=600, gt=0)
