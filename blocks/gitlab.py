"""Block type for a GitLab server: clone access, commit statuses, webhook secret."""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class ShiplineGitLab(Block):
    """A GitLab instance that Shipline clones from and reports to."""

    _block_type_name: ClassVar[str] = "Shipline GitLab"
    _block_type_slug: ClassVar[str] = "shipline-gitlab"
    _description: ClassVar[str] = "GitLab: token for clones and commit statuses, secret of incoming webhooks."

    url: str = Field(description="Base URL, e.g. https://gitlab.example.com")
    token: SecretStr | None = Field(default=None, description="Personal, project or group access token.")
    webhook_secret: SecretStr | None = Field(default=None, description="X-Gitlab-Token of incoming hooks.")
