"""Block type for the Docker registry that holds base and app images."""

from __future__ import annotations

from typing import ClassVar

import docker
from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks.documents import load_document
from shipline.build.registry import Registry
from shipline.docker import docker_client

DEFAULT = "default"


class ShiplineRegistry(Block):
    """A Docker registry (Distribution API v2). Builds read the ``default`` document at run time."""

    _block_type_name: ClassVar[str] = "Shipline Registry"
    _block_type_slug: ClassVar[str] = "shipline-registry"
    _description: ClassVar[str] = "The Docker registry that Shipline pushes images to and deploys them from."

    address: str = Field(default="127.0.0.1:5000", description="host:port as it appears in image names.")
    username: str | None = Field(default=None)
    password: SecretStr | None = Field(default=None)
    insecure: bool = Field(default=True, description="Plain HTTP (loopback registries only).")

    @classmethod
    def current(cls) -> ShiplineRegistry:
        """The registry builds push to now: the saved ``default`` document, as an operator last edited it.

        Raises:
            ConfigError: if there is none.
        """
        return load_document(
            cls,
            DEFAULT,
            what="no registry",
            hint="shipline up creates it; or create it in the Prefect UI (Blocks)",
        )

    def registry(self) -> Registry:
        """Where images go, as the build code takes it."""
        return Registry(
            address=self.address, username=self.username, password=self.password, insecure=self.insecure
        )

    def docker_client(self, docker_host: str) -> docker.DockerClient:
        """A client of the Docker Engine at ``docker_host`` holding this registry's credentials."""
        client = docker_client(docker_host)
        self.registry().log_in(client)
        return client
