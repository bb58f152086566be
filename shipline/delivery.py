"""What a delivery produced."""

from __future__ import annotations

from pydantic import BaseModel


class DeliverySummary(BaseModel):
    """The commit, the image every environment runs, and the release number in each environment."""

    app: str
    sha: str
    source: str
    image: str
    digest: str
    releases: dict[str, int]
