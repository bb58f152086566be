"""`shipline logs search|tail|partitions` on a seeded embedded store: output, JSON, errors, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shipline import cli
from shipline.logs.sqlite import SqliteStore
from tests.log_store_contract import API, MESSAGES, WEB, records

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SHIPLINE_HOME", str(tmp_path))
    monkeypatch.delenv("SHIPLINE_LOG_STORE", raising=False)
    store = SqliteStore(tmp_path / "logstore" / "logs.db")
    store.write(records(), [])
    store.close()
    return tmp_path


def test_search_prints_matches_newest_first_with_their_tags(home: Path) -> None:
    result = runner.invoke(cli.app, ["logs", "search", "ms", "--no-color"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("WARN slow query took 900ms")
    assert " api/prod:20002 #3 stderr " in lines[0]
    assert lines[1].endswith("GET /api/v1/users 200 in 12ms")


def test_search_highlights_on_request_and_filters(home: Path) -> None:
    result = runner.invoke(cli.app, ["logs", "search", "数据库", "--app", WEB.app, "--color"])
    assert result.exit_code == 0, result.output
    assert "\x1b[" in result.stdout and "数据库" in result.stdout
    none = runner.invoke(cli.app, ["logs", "search", "数据库", "--app", API.app])
    assert none.exit_code == 0 and none.stdout == ""


def test_search_json_and_count(home: Path) -> None:
    result = runner.invoke(cli.app, ["logs", "search", "ms OR ok", "--json"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.stdout)
    assert [h["message"] for h in hits] == [
        "ok",
        "WARN slow query took 900ms",
        "GET /api/v1/users 200 in 12ms",
    ]
    assert hits[-1]["fields"] == {"level": "info", "n": 0} and hits[-1]["app"] == "web"
    count = runner.invoke(cli.app, ["logs", "search", "a", "--count"])
    assert count.stdout.strip() == str(sum("a" in m.casefold() for _, m in MESSAGES))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["logs", "search", '"unclosed'], "unclosed quote"),
        (["logs", "search", "--", "-only"], "only excludes"),
        (["logs", "search", "x", "--since", "yesterday"], "neither a duration nor a time"),
        (["logs", "search", "x", "--since", "1h", "--until", "2h"], "--since is later than --until"),
    ],
)
def test_bad_input_is_one_error_line_with_a_hint(home: Path, arguments: list[str], message: str) -> None:
    result = runner.invoke(cli.app, arguments)
    assert result.exit_code == 1
    assert message in result.output and "hint:" in result.output
    assert "Traceback" not in result.output


def test_tail_without_follow_prints_the_last_lines_of_the_app(home: Path) -> None:
    result = runner.invoke(cli.app, ["logs", "tail", API.app, "--env", API.env, "-n", "2", "--no-follow"])
    assert result.exit_code == 0, result.output
    assert [line.split(" ", 5)[-1] for line in result.stdout.splitlines()] == [
        "WARN slow query took 900ms",
        "ok",
    ]


def test_partitions(home: Path) -> None:
    result = runner.invoke(cli.app, ["logs", "partitions", "--json"])
    assert result.exit_code == 0, result.output
    [day] = json.loads(result.stdout)
    assert day["lines"] == len(MESSAGES)
