"""The base layers Shipline can build, by name: light to import (``shipline check`` answers in well under a
second), read by the image builders and the spec check alike."""

from __future__ import annotations

from shipline.config import PROJECT_ROOT

TEMPLATES = PROJECT_ROOT / "templates" / "images"
OS_LAYERS = ("busybox", "debian")
"""The OS layers Shipline builds: ``busybox`` (the host's static busybox) and ``debian`` (a suite)."""


def middleware_names() -> list[str]:
    """Middleware layers that templates/images/middleware/ defines."""
    return sorted(
        p.name.removesuffix(".Dockerfile.j2") for p in (TEMPLATES / "middleware").glob("*.Dockerfile.j2")
    )
