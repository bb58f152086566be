from collections.abc import Iterator

import pytest

from shipline.config import Settings
from tests.stack_fixture import app_on_stack, stack_settings


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    """Settings of a local stack whose every component answers."""
    yield from stack_settings()


@pytest.fixture
def app(settings: Settings) -> Iterator[str]:
    """An app name of this test only; its containers, in any environment, are removed after the test."""
    yield from app_on_stack(settings)
