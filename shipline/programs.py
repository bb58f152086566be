"""Where the programs Shipline drives are found: the project's virtualenv first, then PATH, then sbin.

The virtualenv holds what the wheels ship (the Compose v2 binary, ruff, bandit, prefect); Debian's
daemons (dockerd, nginx) live in /usr/sbin, which a non-login root shell may not have on its PATH.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

SBIN = "/usr/sbin:/sbin"


def find_program(name: str) -> str | None:
    """The absolute path of program ``name``, or None when it is not installed."""
    return (
        shutil.which(name, path=str(Path(sys.executable).parent))
        or shutil.which(name)
        or shutil.which(name, path=SBIN)
    )
