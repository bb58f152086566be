import shutil
from collections.abc import Iterator
from pathlib import Path

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


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello-python"


@pytest.fixture
def sample(tmp_path: Path, app: str) -> Path:
    """The Python sample under this test's app name."""
    copy = tmp_path / app
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("__pycache__", "reports", "REVISION"))
    spec = copy / "shipline.yaml"
    spec.write_text(spec.read_text().replace("app: hello-python", f"app: {app}"))
    return copy
