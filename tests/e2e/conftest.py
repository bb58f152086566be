from collections.abc import Iterator

import pytest

from shipline.config import Settings
from tests.stack_fixture import stack_settings


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    """Settings of a local stack whose every component answers."""
    yield from stack_settings()
