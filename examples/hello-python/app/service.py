"""Request handling, kept apart from the server so that unit tests call it directly."""

from __future__ import annotations

import json
import os
from pathlib import Path

from app import VERSION

REVISION_FILE = Path(__file__).with_name("REVISION")


def revision() -> str:
    """The git sha this build was made from (written by the build command), or "unknown"."""
    try:
        return REVISION_FILE.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def respond(path: str) -> tuple[int, str, str]:
    """Status, content type and body for a GET of ``path``."""
    if path == "/healthz":
        return 200, "text/plain", "ok\n"
    if path == "/version":
        body = json.dumps({"version": VERSION, "sha": revision()})
        return 200, "application/json", body + "\n"
    if path == "/":
        greeting = os.environ.get("GREETING", "hello")
        return 200, "text/plain", f"{greeting} from hello-python {VERSION}\n"
    return 404, "text/plain", "not found\n"
