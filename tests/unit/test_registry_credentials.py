"""The stack registry's login: generated once, private, the htpasswd the registry checks derived from it."""

from __future__ import annotations

import base64
import json
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import bcrypt
import pytest
import yaml
from pydantic import SecretStr

from shipline.build.registry import Registry
from shipline.config import Settings
from shipline.errors import ComponentStartError, ConfigError
from shipline.stack.components import Registry as RegistryComponent
from shipline.stack.provision import _stale_login
from shipline.stack.registry_credentials import ensure_registry_credentials


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_no_login_before_up_generates_one(settings: Settings) -> None:
    assert settings.registry_login() is None
    assert Registry.of_stack(settings).basic_auth() is None


def test_the_login_is_random_private_and_generated_once(settings: Settings, tmp_path: Path) -> None:
    ensure_registry_credentials(settings)
    login = settings.registry_login()
    assert login is not None
    username, password = login[0], login[1].get_secret_value()
    assert mode(settings.registry_credentials_file.parent) == 0o700
    assert mode(settings.registry_credentials_file) == 0o600
    assert mode(settings.registry_htpasswd_file) == 0o600
    user, _, hashed = settings.registry_htpasswd_file.read_text().strip().partition(":")
    assert user == username and hashed.startswith("$2b$")  # bcrypt: the only hash the registry accepts
    assert bcrypt.checkpw(password.encode(), hashed.encode())
    assert password not in settings.registry_htpasswd_file.read_text()

    hash_before = settings.registry_htpasswd_file.read_text()
    ensure_registry_credentials(settings)  # a second `up` keeps both
    assert settings.registry_login() == login
    assert settings.registry_htpasswd_file.read_text() == hash_before

    other = Settings(home=tmp_path / "other")
    ensure_registry_credentials(other)
    other_login = other.registry_login()
    assert other_login is not None and other_login[1] != login[1]  # random per home


@pytest.mark.parametrize("damage", ["missing", "other password", "not bcrypt"])
def test_a_lost_or_wrong_htpasswd_is_written_again_from_the_login(settings: Settings, damage: str) -> None:
    ensure_registry_credentials(settings)
    login = settings.registry_login()
    assert login is not None
    htpasswd = settings.registry_htpasswd_file
    if damage == "missing":
        htpasswd.unlink()
    elif damage == "other password":
        htpasswd.write_text(f"{login[0]}:{bcrypt.hashpw(b'other', bcrypt.gensalt(rounds=4)).decode()}\n")
    else:
        htpasswd.write_text(f"{login[0]}:{{SHA}}abc\n")
    ensure_registry_credentials(settings)
    assert settings.registry_login() == login
    hashed = htpasswd.read_text().strip().partition(":")[2]
    assert bcrypt.checkpw(login[1].get_secret_value().encode(), hashed.encode())
    assert mode(htpasswd) == 0o600


def test_a_damaged_credentials_file_names_itself_and_the_fix(settings: Settings) -> None:
    settings.registry_credentials_file.parent.mkdir(parents=True)
    settings.registry_credentials_file.write_text("{not json")
    with pytest.raises(ConfigError) as failed:
        settings.registry_login()
    assert str(settings.registry_credentials_file) in failed.value.message
    assert "shipline up" in (failed.value.hint or "")


def test_the_registry_configuration_asks_for_the_login(settings: Settings) -> None:
    component = RegistryComponent(settings)
    component.prepare()
    config = yaml.safe_load(component.config_path.read_text())
    assert config["auth"] == {"htpasswd": {"realm": "shipline", "path": str(settings.registry_htpasswd_file)}}
    assert config["storage"]["delete"] == {"enabled": True}  # housekeeping's deletes, with the login only
    assert settings.registry_login() is not None
    login = settings.registry_login()
    assert login is not None and login[1].get_secret_value() not in component.config_path.read_text()


def test_of_stack_carries_the_login(settings: Settings) -> None:
    ensure_registry_credentials(settings)
    login = settings.registry_login()
    assert login is not None
    registry = Registry.of_stack(settings)
    assert registry.address == settings.registry_address
    assert registry.basic_auth() == (login[0], login[1].get_secret_value())


def test_docker_config_holds_the_login_privately(tmp_path: Path) -> None:
    registry = Registry(address="127.0.0.1:5000", username="shipline", password=SecretStr("s3cret"))
    directory = registry.docker_config(tmp_path / "docker-config")
    assert mode(directory) == 0o700 and mode(directory / "config.json") == 0o600
    auths = json.loads((directory / "config.json").read_text())["auths"]
    assert base64.b64decode(auths["127.0.0.1:5000"]["auth"]) == b"shipline:s3cret"
    assert [p.name for p in directory.iterdir()] == ["config.json"]  # no temporary file left

    anonymous = Registry(address="127.0.0.1:5000").docker_config(tmp_path / "none")
    assert json.loads((anonymous / "config.json").read_text()) == {"auths": {}}


def test_a_registry_block_without_the_stack_login_is_stale(settings: Settings) -> None:
    from blocks.registry import ShiplineRegistry

    ensure_registry_credentials(settings)
    stack = Registry.of_stack(settings)
    login = stack.basic_auth()
    assert login is not None
    assert _stale_login(ShiplineRegistry(address=settings.registry_address), stack)
    wrong = ShiplineRegistry(address=settings.registry_address, username=login[0], password=SecretStr("old"))
    assert _stale_login(wrong, stack)
    current = ShiplineRegistry(address=settings.registry_address, username=login[0], password=stack.password)
    assert not _stale_login(current, stack)
    # A block an operator pointed at another registry keeps its own credentials.
    assert not _stale_login(ShiplineRegistry(address="registry.example:5000"), stack)


class _OpenRegistry(BaseHTTPRequestHandler):
    """A registry without authentication: it answers every read."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def test_a_registry_answering_without_the_login_is_refused_with_the_restart_to_do(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OpenRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        settings = Settings(home=tmp_path / "home", registry_port=server.server_address[1])
        component = RegistryComponent(settings)
        assert component.probe()  # it answers as a registry ...
        with pytest.raises(ComponentStartError) as refused:
            component.ready()  # ... but one that anyone may write to
        assert "without credentials" in refused.value.message
        assert "shipline down" in (refused.value.hint or "")
    finally:
        server.shutdown()
