"""The running stack: every component answers, and a second `up` changes nothing."""

import json

from shipline.config import Settings
from shipline.stack.credentials import api_auth_string
from shipline.stack.lifecycle import State, status
from tests.cli import shipline
from tests.stack_fixture import COMPONENTS


def test_status_json_reports_every_component_up(settings: Settings) -> None:
    result = shipline("status", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert list(document["components"]) == COMPONENTS
    down = {name: c for name, c in document["components"].items() if c["state"] != "up"}
    assert down == {}
    assert document["all_up"] is True


def test_second_up_starts_nothing(settings: Settings) -> None:
    before = {c.name: c.pid for c in status(settings)}
    result = shipline("up")
    assert result.returncode == 0, result.stderr
    assert "Everything was already running; nothing changed" in result.stdout
    assert "starting" not in result.stdout and "restarting" not in result.stdout
    # Where the UI's login is, never the credential itself.
    assert f"PREFECT_API_AUTH_STRING in {settings.prefect_client_credentials}" in result.stdout
    assert api_auth_string(settings).partition(":")[2] not in result.stdout + result.stderr
    after = {c.name: c.pid for c in status(settings)}
    assert after == before
    for url in (settings.prefect_url, settings.etcd_url, settings.nginx_url):
        assert url in result.stdout


def test_doctor_passes_on_the_running_stack(settings: Settings) -> None:
    result = shipline("doctor")
    assert result.returncode == 0, result.stdout
    assert "FAIL" not in result.stdout
    assert all(c.state is State.UP for c in status(settings))
