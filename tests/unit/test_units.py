"""`shipline units`: systemd units that restart each daemon of a host's role, with the stack's commands."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from shipline import cli
from shipline.stack.prefect_server import server_auth_from_client

runner = CliRunner()


def test_units_of_every_role(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPLINE_HOME", str(tmp_path / "home"))
    result = runner.invoke(cli.app, ["units", "--out", str(tmp_path / "units")])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "units").iterdir())
    assert names == [
        "shipline-discover.service",
        "shipline-flow-starter.service",
        "shipline-logs-agent.service",
        "shipline-prefect.service",  # the server (its services in the same process by default)
        "shipline-registrator-pre.service",
        "shipline-registrator-prod.service",
        "shipline-web.service",
        "shipline-worker-ci.service",
        "shipline-worker-pre.service",
        "shipline-worker-prod.service",
    ]
    unit = (tmp_path / "units" / "shipline-registrator-prod.service").read_text()
    assert "Restart=always" in unit and "RestartSec=1" in unit
    assert " -m shipline registrator --env prod\n" in unit
    assert "Environment=PREFECT_API_URL=http://127.0.0.1:4200/api" in unit
    # Prefect's credential comes from its 0600 file, never from the world-readable unit text.
    assert f"EnvironmentFile={tmp_path / 'home' / 'credentials' / 'prefect-api.env'}\n" in unit
    assert "AUTH_STRING" not in unit and "ENCRYPTION_KEY" not in unit
    # A worker's runs start from its host's flow starter, which that host's unit runs.
    worker = (tmp_path / "units" / "shipline-worker-pre.service").read_text()
    starter = (tmp_path / "units" / "shipline-flow-starter.service").read_text()
    socket = tmp_path / "home" / "run" / "flow-starter.sock"
    assert f"Environment=SHIPLINE_FLOW_STARTER_SOCKET={socket}\n" in worker
    assert " -m shipline.stack.flow_starter serve\n" in starter


def test_an_unknown_role_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(cli.app, ["units", "--role", "qa", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "unknown role(s) qa" in result.output and not list(tmp_path.iterdir())


def test_units_name_the_etcd_credentials_file_never_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("SHIPLINE_HOME", str(home))
    credentials = home / "credentials" / "etcd.env"
    credentials.parent.mkdir(parents=True)
    credentials.write_text("ETCDCTL_USER=shipline:s3cret-value\n")
    result = runner.invoke(cli.app, ["units", "--out", str(tmp_path / "units")])
    assert result.exit_code == 0, result.output
    assert f"read etcd's credentials from {credentials}" in result.output
    for unit in (tmp_path / "units").iterdir():
        text = unit.read_text()
        assert f"Environment=SHIPLINE_ETCD_CREDENTIALS_FILE={credentials}\n" in text
        assert "s3cret-value" not in text
    assert "s3cret-value" not in result.output


def test_units_of_a_host_of_its_own_name_its_address_and_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIPLINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHIPLINE_PROFILE", "scale")
    result = runner.invoke(cli.app, ["units", "--role", "prod", "--out", str(tmp_path / "units")])
    assert result.exit_code == 0, result.output
    engine = f"unix://{tmp_path / 'home' / 'run' / 'docker-prod.sock'}"
    registrator = (tmp_path / "units" / "shipline-registrator-prod.service").read_text()
    assert f" -m shipline registrator --env prod --ip 127.0.0.3 --docker-host {engine}\n" in registrator
    agent = (tmp_path / "units" / "shipline-logs-agent.service").read_text()
    assert f" -m shipline logs agent --docker-host {engine} --host-name prod\n" in agent


def test_the_server_role_runs_prefect_and_split_its_services_and_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("SHIPLINE_HOME", str(home))
    monkeypatch.setenv("SHIPLINE_PROFILE", "scale")  # Prefect on PostgreSQL, its services apart
    result = runner.invoke(cli.app, ["units", "--role", "server", "--out", str(tmp_path / "units")])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "units").iterdir())
    assert names == [
        "shipline-prefect-services.service",
        "shipline-prefect.service",
        "shipline-redis.service",
    ]
    api = (tmp_path / "units" / "shipline-prefect.service").read_text()
    assert (
        " -m shipline.stack.prefect_server server start --host 127.0.0.1 --port 4300 --no-services\n" in api
    )
    services = (tmp_path / "units" / "shipline-prefect-services.service").read_text()
    assert " -m shipline.stack.prefect_server server services start\n" in services
    assert (
        "After=network-online.target postgresql.service shipline-redis.service shipline-prefect.service\n"
        in (services)
    )
    credentials = home / "credentials"
    for unit in (api, services):
        assert "Environment=PREFECT_MESSAGING_BROKER=prefect_redis.messaging\n" in unit
        assert "Environment=PREFECT_REDIS_MESSAGING_PORT=6480\n" in unit
        assert (
            "Environment=PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://shipline@127.0.0.1:5533/"
            in unit
        )
        # Secrets from their 0600 files: the clients' auth string (the launcher gives it to the server),
        # the block-secret key, Redis's password.
        for name in ("prefect-api.env", "prefect-server.env", "redis.env"):
            assert f"EnvironmentFile={credentials / name}\n" in unit
        assert "PASSWORD=" not in unit and "AUTH_STRING=" not in unit
    redis = (tmp_path / "units" / "shipline-redis.service").read_text()
    assert f"redis-server {home / 'redis' / 'redis.conf'}\n" in redis
    assert "Environment" not in redis


def test_the_server_role_embedded_is_one_unit_and_a_database_password_stays_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIPLINE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHIPLINE_PREFECT_DATABASE", "postgresql")
    monkeypatch.setenv(
        "SHIPLINE_PREFECT_DATABASE_URL", "postgresql+asyncpg://prefect:hunter2@db.example:5432/p"
    )
    result = runner.invoke(cli.app, ["units", "--role", "server", "--out", str(tmp_path / "units")])
    assert result.exit_code == 0, result.output
    assert [p.name for p in (tmp_path / "units").iterdir()] == ["shipline-prefect.service"]
    api = (tmp_path / "units" / "shipline-prefect.service").read_text()
    assert " server start --host 127.0.0.1 --port 4200\n" in api and "REDIS" not in api
    assert "hunter2" not in api and "PREFECT_API_DATABASE_CONNECTION_URL" not in api


def test_the_server_launcher_takes_the_clients_auth_string() -> None:
    environment = {"PREFECT_API_AUTH_STRING": "shipline:abc"}
    server_auth_from_client(environment)
    assert environment["PREFECT_SERVER_API_AUTH_STRING"] == "shipline:abc"
    own = {"PREFECT_API_AUTH_STRING": "shipline:abc", "PREFECT_SERVER_API_AUTH_STRING": "shipline:own"}
    server_auth_from_client(own)
    assert own["PREFECT_SERVER_API_AUTH_STRING"] == "shipline:own"
