"""The ``shipline`` command as a user runs it: a new process, its output captured, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping


def shipline(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``shipline ARGS…`` with this interpreter; ``env`` replaces the environment when given."""
    return subprocess.run(
        [sys.executable, "-m", "shipline", *args],
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
