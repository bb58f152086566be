import json

from app import VERSION
from app.service import respond


def test_health() -> None:
    assert respond("/healthz") == (200, "text/plain", "ok\n")


def test_version_reports_version_and_sha() -> None:
    status, content_type, body = respond("/version")
    assert (status, content_type) == (200, "application/json")
    document = json.loads(body)
    assert document["version"] == VERSION
    assert document["sha"]


def test_greeting_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("GREETING", "bonjour")
    assert respond("/")[2].startswith("bonjour from hello-python")


def test_unknown_path() -> None:
    assert respond("/nope")[0] == 404
