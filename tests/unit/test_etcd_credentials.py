"""etcd's credentials files: written once with a random password, mode 0600, read back; a bad file is
reported by its path, never by its content."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from shipline.config import Settings
from shipline.errors import ConfigError, ServiceUnavailableError
from shipline.etcd_client import connect, read_credentials
from shipline.stack.etcd_auth import ensure_credentials


def test_the_files_live_under_home_unless_named(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    assert settings.etcd_credentials_path == tmp_path / "home" / "credentials" / "etcd.env"
    assert settings.etcd_root_credentials_path == tmp_path / "home" / "credentials" / "etcd-root.env"
    named = Settings(home=tmp_path / "home", etcd_credentials_file=tmp_path / "shared" / "etcd.env")
    assert named.etcd_credentials_path == tmp_path / "shared" / "etcd.env"
    assert named.etcd_root_credentials_path == tmp_path / "shared" / "etcd-root.env"


def test_credentials_are_written_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "credentials" / "etcd.env"
    made = ensure_credentials(path, "shipline")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert made.user == "shipline" and len(made.password.get_secret_value()) >= 32
    assert f"ETCDCTL_USER=shipline:{made.password.get_secret_value()}\n" in path.read_text()
    assert ensure_credentials(path, "shipline") == made  # never regenerated
    assert read_credentials(path) == made
    other = ensure_credentials(tmp_path / "credentials" / "etcd-root.env", "root")
    assert other.password != made.password
    assert "ETCDCTL_USER" not in repr(made) and made.password.get_secret_value() not in repr(made)


def test_a_file_opened_to_others_is_closed_again(tmp_path: Path) -> None:
    path = tmp_path / "etcd.env"
    path.write_text("ETCDCTL_USER=shipline:abc\n")
    path.chmod(0o644)
    ensure_credentials(path, "shipline")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_no_file_means_no_credentials(tmp_path: Path) -> None:
    assert read_credentials(tmp_path / "missing.env") is None


@pytest.mark.parametrize("text", ["", "# nothing\n", "ETCDCTL_USER=shipline\n", "OTHER=shipline:pw-secret\n"])
def test_a_file_without_credentials_is_named_not_shown(tmp_path: Path, text: str) -> None:
    path = tmp_path / "etcd.env"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        read_credentials(path)
    assert f"etcd credentials {path} hold no line ETCDCTL_USER=USER:PASSWORD" == refused.value.message
    assert "pw-secret" not in f"{refused.value.message} {refused.value.hint}"
    with pytest.raises(ConfigError):
        ensure_credentials(path, "shipline")  # never overwritten: etcd may hold the lost password
    assert path.read_text() == text


def test_an_etcd_that_does_not_answer_is_a_transient_failure_a_task_retries() -> None:
    # A cluster electing a leader refuses for a second; a release's task must try again, not fail.
    async def attempt() -> None:
        async with connect("http://127.0.0.1:1", timeout=2.0, credentials=None):
            pass

    with pytest.raises(ServiceUnavailableError) as raised:
        asyncio.run(attempt())
    assert raised.value.transient and "does not answer" in raised.value.message
