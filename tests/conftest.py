"""Shared test set-up.

Prefect reads its settings when it is first imported, so the stack's Prefect settings are put into the
environment here, before any test module imports prefect. An explicit PREFECT_API_URL wins.
"""

from __future__ import annotations

import os

from shipline.config import load_settings

for _key, _value in load_settings().prefect_environment().items():
    os.environ.setdefault(_key, _value)
