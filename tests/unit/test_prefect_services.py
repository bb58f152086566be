"""Prefect's API and its background services apart (``SHIPLINE_PREFECT_SERVICES=split``): the setting, the
components it adds (Redis, prefect-services), what each process is given, and what ``down`` stops."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from shipline.config import ScaleSettings, Settings, load_settings
from shipline.errors import ConfigError
from shipline.stack.components import PrefectServer, PrefectServices, Redis, Worker, infrastructure
from shipline.stack.credentials import (
    REDIS_PASSWORD_VARIABLE,
    ensure_api_credential,
    ensure_redis_password,
    redis_password,
)
from shipline.stack.lifecycle import down
from shipline.stack.prefect_server import docket_url_with_password
from shipline.stack.processes import ProcessTable


def split(home: Path, **overrides: object) -> Settings:
    return Settings(
        home=home,
        prefect_database="postgresql",
        prefect_services="split",
        **overrides,  # type: ignore[arg-type]
    )


def names(settings: Settings) -> list[str]:
    return [component.name for component in infrastructure(settings)]


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SHIPLINE_PREFECT_SERVICES", "SHIPLINE_PREFECT_DATABASE", "SHIPLINE_REDIS_PORT"):
        monkeypatch.delenv(name, raising=False)


def test_embedded_by_default_split_in_the_scale_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHIPLINE_HOME", raising=False)
    default, scale = Settings(), ScaleSettings()
    assert (default.prefect_services, scale.prefect_services) == ("embedded", "split")
    assert scale.redis_port == default.redis_port + 100
    assert "redis" not in names(default) and "prefect-services" not in names(default)
    assert "--no-services" not in PrefectServer(default).command()
    monkeypatch.setenv("SHIPLINE_PREFECT_SERVICES", "split")
    monkeypatch.setenv("SHIPLINE_PREFECT_DATABASE", "postgresql")
    assert load_settings("default").prefect_services == "split"


def test_split_needs_postgresql(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPLINE_PREFECT_SERVICES", "split")
    with pytest.raises(ConfigError, match="split needs SHIPLINE_PREFECT_DATABASE=postgresql"):
        load_settings("default")
    monkeypatch.setenv("SHIPLINE_PREFECT_SERVICES", "apart")
    with pytest.raises(ConfigError, match="SHIPLINE_PREFECT_SERVICES='apart'"):
        load_settings("default")


def test_redis_port_clashes_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPLINE_REDIS_PORT", "5433")
    monkeypatch.delenv("SHIPLINE_POSTGRES_PORT", raising=False)
    with pytest.raises(ConfigError, match="redis_port and postgres_port are both 5433"):
        load_settings("default")


def test_split_adds_redis_before_the_api_and_the_services_after_it(tmp_path: Path) -> None:
    settings = split(tmp_path)
    order = names(settings)
    assert order.index("postgres") < order.index("redis") < order.index("prefect")
    assert order.index("prefect-services") == order.index("prefect") + 1  # `down` stops it first
    api, services = PrefectServer(settings), PrefectServices(settings)
    assert api.command()[1:] == [
        "-m",
        "shipline.stack.prefect_server",
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(settings.prefect_port),
        "--no-services",
    ]
    assert services.command() == [
        sys.executable,
        "-m",
        "shipline.stack.prefect_server",
        "server",
        "services",
        "start",
    ]
    assert services.supervised and services.host_name == "main"
    assert api.needs == ("postgres", "redis") and services.needs == ("postgres", "redis", "prefect")


def test_only_the_two_server_processes_get_redis_and_its_password(tmp_path: Path) -> None:
    settings = split(tmp_path, redis_port=6999)
    ensure_api_credential(settings)
    (settings.credentials_dir / "prefect-server.env").write_text("PREFECT_SERVER_ENCRYPTION_KEY=k\n")
    assert ensure_redis_password(settings) and not ensure_redis_password(settings)  # generated once
    password = redis_password(settings)
    assert settings.redis_credentials.stat().st_mode & 0o777 == 0o600
    for component in (PrefectServer(settings), PrefectServices(settings)):
        environment = component.environment()
        assert environment[REDIS_PASSWORD_VARIABLE] == password
        assert environment["PREFECT_MESSAGING_BROKER"] == "prefect_redis.messaging"
        assert environment["PREFECT_MESSAGING_CACHE"] == "prefect_redis.messaging"
        assert environment["PREFECT_SERVER_EVENTS_CAUSAL_ORDERING"] == "prefect_redis.ordering"
        assert environment["PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE"] == "prefect_redis.lease_storage"
        assert environment["PREFECT_REDIS_MESSAGING_PORT"] == "6999"
        assert environment["PREFECT_SERVER_DOCKET_URL"] == "redis://127.0.0.1:6999/1"  # no password here
    worker = Worker(settings, pool="ci").environment()
    assert not [key for key in worker if "REDIS" in key or key.startswith("PREFECT_MESSAGING")]
    assert password not in str(worker) and password not in str(settings.prefect_environment())


def test_redis_reads_its_password_from_a_private_file_never_its_command_line(tmp_path: Path) -> None:
    settings = split(tmp_path, redis_port=6999)
    component = Redis(settings)
    component.prepare()
    password = redis_password(settings)
    config = component.config_path.read_text()
    assert f"requirepass {password}\n" in config
    assert "bind 127.0.0.1\n" in config and "port 6999\n" in config
    assert f"dir {settings.redis_dir / 'data'}\n" in config
    assert component.config_path.stat().st_mode & 0o777 == 0o600
    assert settings.redis_dir.stat().st_mode & 0o777 == 0o700
    assert component.command()[-1] == str(component.config_path)
    assert password not in " ".join(component.command())
    assert not component.probe()  # nothing listens there


def test_docket_gets_the_password_from_its_variable() -> None:
    environment = {
        "PREFECT_SERVER_DOCKET_URL": "redis://127.0.0.1:6380/1",
        REDIS_PASSWORD_VARIABLE: "p/ss:word",
    }
    docket_url_with_password(environment)
    assert environment["PREFECT_SERVER_DOCKET_URL"] == "redis://:p%2Fss%3Aword@127.0.0.1:6380/1"
    docket_url_with_password(environment)  # a URL with its own credentials is left alone
    assert environment["PREFECT_SERVER_DOCKET_URL"] == "redis://:p%2Fss%3Aword@127.0.0.1:6380/1"
    memory = {"PREFECT_SERVER_DOCKET_URL": "memory://", REDIS_PASSWORD_VARIABLE: "x"}
    docket_url_with_password(memory)
    assert memory["PREFECT_SERVER_DOCKET_URL"] == "memory://"


def test_down_without_split_stops_the_redis_and_services_up_started_with_it(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")  # embedded: neither is one of its components
    table = ProcessTable(settings.run_dir)
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    started = [
        table.spawn(name, sleep, log=settings.log_dir / f"{name}.log")
        for name in ("redis", "prefect-services")
    ]
    stranger = table.spawn("redis-ish", sleep, log=settings.log_dir / "redis-ish.log")
    try:
        assert down(settings, report=lambda _: None) == ["prefect-services", "redis"]
        assert not any(record.alive for record in started)
        assert stranger.alive
    finally:
        table.stop("redis-ish", timeout=5)
