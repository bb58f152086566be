"""Shared test set-up.

Prefect reads its settings when it is first imported, so the stack's Prefect settings are put into the
environment here, before any test module imports prefect. An explicit PREFECT_API_URL wins.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from shipline.config import load_settings
from shipline.stack.credentials import ensure_api_credential
from tests.fake_gitlab import FakeGitLab

if TYPE_CHECKING:  # imported in the fixture: Prefect must not be imported before the settings below
    from blocks.registry import ShiplineRegistry

ensure_api_credential(load_settings())  # as `up` does first: every client of the stack's Prefect sends it
for _key, _value in load_settings().prefect_environment().items():
    os.environ.setdefault(_key, _value)


@pytest.fixture
def fake_gitlab() -> Iterator[FakeGitLab]:
    """A fake GitLab (v4 API) on a free port of 127.0.0.1, for one test; see ``tests/fake_gitlab.py``."""
    with FakeGitLab() as fake:
        yield fake


@pytest.fixture
def registry_block() -> Iterator[ShiplineRegistry]:
    """The shipline-registry block as the operator left it, put back after a test that edits it."""
    from blocks.registry import ShiplineRegistry

    original = ShiplineRegistry.current()
    yield original
    original.save("default", overwrite=True)
