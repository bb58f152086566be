"""The session's local stack: brought up once, stopped at the end only if this session started it.

A component that cannot start fails the session's tests with the component, its log and a fix; no test
is skipped for a missing service. Set SHIPLINE_KEEP_STACK=1 to leave a stack this session started running.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from shipline.config import Settings, load_settings
from shipline.errors import ShiplineError
from shipline.stack.lifecycle import all_components, down, up


def stack_settings() -> Iterator[Settings]:
    settings = load_settings()
    try:
        result = up(settings, report=lambda line: print(line, flush=True))
    except ShiplineError as exc:
        pytest.fail(f"the local stack did not come up: {exc.message}\nhint: {exc.hint}", pytrace=False)
    yield settings
    if result.started and not os.environ.get("SHIPLINE_KEEP_STACK"):
        started = [c for c in all_components(settings) if c.name in result.started]
        down(settings, components=started, report=lambda line: print(line, flush=True))
