"""The command line: clear one-line errors, exit codes, machine-readable output."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shipline import cli
from shipline.errors import PortInUseError
from shipline.stack.doctor import Check
from shipline.stack.lifecycle import ComponentStatus, State

runner = CliRunner()


def test_invalid_setting_is_one_line_without_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPLINE_ETCD_PORT", "not-a-port")
    result = runner.invoke(cli.app, ["status"])
    assert result.exit_code == 1
    assert "error: invalid Shipline settings: SHIPLINE_ETCD_PORT='not-a-port'" in result.output
    assert "Traceback" not in result.output


def test_stack_error_shows_message_and_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHIPLINE_HOME", str(tmp_path))

    def failing_up(*args: object, **kwargs: object) -> None:
        raise PortInUseError("etcd: port 2379 is held by nginx (pid 7)", hint="stop that program")

    monkeypatch.setattr("shipline.stack.lifecycle.up", failing_up)
    result = runner.invoke(cli.app, ["up"])
    assert result.exit_code == 1
    assert "error: etcd: port 2379 is held by nginx (pid 7)" in result.output
    assert "hint: stop that program" in result.output
    assert "Traceback" not in result.output


def test_status_json_lists_every_component(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHIPLINE_HOME", str(tmp_path))
    names = [
        "docker",
        "etcd",
        "registry",
        "nginx",
        "postgres",
        "prefect",
        "worker-ci",
        "worker-pre",
        "worker-prod",
    ]
    fake = [ComponentStatus(n, State.UP, f"http://x/{n}", True, 100 + i, "log") for i, n in enumerate(names)]
    fake[-1] = ComponentStatus(
        "worker-prod",
        State.UP,
        "http://x/worker-prod",
        True,
        108,
        "log",
        restarts=2,
        last_exit="killed by SIGKILL",
    )
    monkeypatch.setattr("shipline.stack.lifecycle.status", lambda settings: fake)
    result = runner.invoke(cli.app, ["status", "--json"])
    assert result.exit_code == 0
    document = json.loads(result.output)
    assert document["all_up"] is True
    assert list(document["components"]) == names
    assert document["components"]["worker-prod"] == {
        "host": "main",
        "state": "up",
        "url": "http://x/worker-prod",
        "managed": True,
        "pid": 108,
        "log": "log",
        "restarts": 2,
        "last_exit": "killed by SIGKILL",
    }


def test_doctor_exits_1_and_shows_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHIPLINE_HOME", str(tmp_path))
    checks = [
        Check("git", True, "2.39"),
        Check("etcd", False, "etcd not found", "apt-get install etcd-server"),
    ]
    monkeypatch.setattr("shipline.stack.doctor.run_checks", lambda settings: checks)
    result = runner.invoke(cli.app, ["doctor"])
    assert result.exit_code == 1
    assert "ok   git" in result.output
    assert "FAIL etcd" in result.output
    assert "fix: apt-get install etcd-server" in result.output
