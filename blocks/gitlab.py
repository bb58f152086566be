"""Block type for a GitLab server: clone access, commit statuses, webhook secret."""

from __future__ import annotations

from typing import ClassVar, cast

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from shipline.gitlab.api import GitLabProject, token_may_go_to

DEFAULT = "default"


class ShiplineGitLab(Block):
    """A GitLab instance that Shipline clones from and reports to. Read at run time: edits take effect."""

    _block_type_name: ClassVar[str] = "Shipline GitLab"
    _block_type_slug: ClassVar[str] = "shipline-gitlab"
    _description: ClassVar[str] = "GitLab: token for clones and commit statuses, secret of incoming webhooks."

    url: str = Field(description="Base URL, e.g. https://gitlab.example.com")
    token: SecretStr | None = Field(default=None, description="Personal, project or group access token.")
    webhook_secret: SecretStr | None = Field(default=None, description="X-Gitlab-Token of incoming hooks.")

    @classmethod
    def configured(cls) -> ShiplineGitLab | None:
        """The ``default`` document as an operator last saved it, or None when there is no GitLab."""
        try:
            return cast(ShiplineGitLab, cls.load(DEFAULT))
        except ValueError:
            return None

    def token_for(self, source: str) -> SecretStr | None:
        """The token, for a clone of ``source`` only when ``source`` is on this GitLab: the same host and
        port, over https (plain http only on loopback, where nothing can listen in). Any other source —
        ``http://elsewhere/x.git`` named in a delivery — gets no token."""
        return self.token if token_may_go_to(source, self.url) else None

    def project(self, path: str) -> GitLabProject:
        """The GitLab project ``path`` (``group/name``), reached with this block's token."""
        return GitLabProject.connect(self.url, self.token, path)
