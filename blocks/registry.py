"""Block type for the Docker registry that holds base and app images."""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class ShiplineRegistry(Block):
    """A Docker registry (Distribution API v2)."""

    _block_type_name: ClassVar[str] = "Shipline Registry"
    _block_type_slug: ClassVar[str] = "shipline-registry"
    _description: ClassVar[str] = "The Docker registry that Shipline pushes images to and deploys them from."

    address: str = Field(default="127.0.0.1:5000", description="host:port as it appears in image names.")
    username: str | None = Field(default=None)
    password: SecretStr | None = Field(default=None)
    insecure: bool = Field(default=True, description="Plain HTTP (loopback registries only).")
