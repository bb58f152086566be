"""A stack of a test module's own in a private home (``shipline up`` of some components), for tests that
need Prefect's server set otherwise than the session's stack (on PostgreSQL, its services apart)."""

from __future__ import annotations

import subprocess
import sys
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from shipline.config import Settings

START = (
    "import sys\n"
    "from shipline.config import load_settings\n"
    "from shipline.stack.lifecycle import up\n"
    "up(load_settings(), only=set(sys.argv[1:]))\n"
)


@dataclass(frozen=True)
class PrivateStack:
    """Some of a stack's components, in a home of the test module's, with its settings as variables."""

    settings: Settings
    env: dict[str, str]

    def up(self, *components: str) -> None:
        """``up`` of these components, as a process of its own (Prefect reads its settings once)."""
        started = subprocess.run(
            [sys.executable, "-c", START, *components],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=400,
            check=False,
        )
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]

    def client(self) -> AbstractContextManager[Any]:
        """Prefect's settings of this stack, for Prefect's client in this process."""
        from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

        auth = self.settings.prefect_environment()["PREFECT_API_AUTH_STRING"]
        return temporary_settings(
            {PREFECT_API_URL: self.settings.prefect_api_url, PREFECT_API_AUTH_STRING: auth}
        )
