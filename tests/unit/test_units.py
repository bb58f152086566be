"""`shipline units`: systemd units that restart each daemon of a host's role, with the stack's commands."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from shipline import cli

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
