"""Block type for the etcd cluster that holds the service registry and releases."""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class ShiplineEtcd(Block):
    """An etcd v3 cluster."""

    _block_type_name: ClassVar[str] = "Shipline etcd"
    _block_type_slug: ClassVar[str] = "shipline-etcd"
    _description: ClassVar[str] = "The etcd cluster: instance registry, releases, port reservations."

    endpoints: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:2379"])
    username: str | None = Field(default=None)
    password: SecretStr | None = Field(default=None)
    lease_ttl_seconds: int = Field(default=10, ge=2, le=3600, description="TTL of instance keys.")
