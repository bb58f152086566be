from collections.abc import AsyncIterator, Iterator

import aetcd
import pytest

from shipline.config import Settings
from shipline.etcd_client import connect
from tests.stack_fixture import app_on_stack, stack_settings


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    """Settings of a local stack whose every component answers."""
    yield from stack_settings()


@pytest.fixture
def app(settings: Settings) -> Iterator[str]:
    """An app name of this test only; its containers, in any environment, are removed after the test.

    A module whose tests leave more of the app behind (etcd keys, an nginx file) overrides this fixture with
    one that requests it and removes the rest.
    """
    yield from app_on_stack(settings)


@pytest.fixture
async def etcd(settings: Settings) -> AsyncIterator[aetcd.Client]:
    """A client of the stack's etcd as Shipline's user, closed after the test."""
    async with connect(settings.etcd_url) as client:
        yield client
