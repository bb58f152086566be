"""Prefect's credentials: generated once, 0600, given to every client and to the server alone where secret;
a database's block-secret key moved out of it; processes older than the credential restarted; the HTTP auth
of Shipline's own calls (credential and CSRF token)."""

from __future__ import annotations

import json
import socket
import sqlite3
import stat
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from shipline.config import Settings
from shipline.errors import ConfigError
from shipline.prefect_auth import PrefectAuth
from shipline.stack.components import DiscoverDaemon, Etcd, PrefectServer, Worker
from shipline.stack.credentials import (
    adopt_encryption_key,
    api_auth_string,
    ensure_api_credential,
    server_environment,
)
from shipline.stack.lifecycle import restart_without_credential
from shipline.stack.processes import ProcessTable
from shipline.stack.units import render_unit


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_api_credential_is_generated_once_readable_by_its_owner_only(settings: Settings) -> None:
    assert ensure_api_credential(settings) is True
    path = settings.prefect_client_credentials
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    first = api_auth_string(settings)
    user, _, password = first.partition(":")
    assert user == "shipline" and len(password) >= 40
    assert ensure_api_credential(settings) is False
    assert api_auth_string(settings) == first
    other = Settings(home=settings.home.parent / "other")
    ensure_api_credential(other)
    assert api_auth_string(other) != first, "each stack draws its own"


def test_every_client_gets_the_credential_but_unit_text_does_not(settings: Settings) -> None:
    assert "PREFECT_API_AUTH_STRING" not in settings.prefect_environment()  # before the first `up`
    ensure_api_credential(settings)
    secret = api_auth_string(settings)
    environment = settings.prefect_environment()
    assert environment["PREFECT_API_AUTH_STRING"] == secret
    assert environment["PREFECT_CLIENT_CSRF_SUPPORT_ENABLED"] == "true"
    assert "PREFECT_API_AUTH_STRING" not in settings.prefect_environment(credentials=False)
    unit = render_unit("shipline-worker-ci", ["prefect", "worker", "start"], settings)
    assert secret not in unit and secret.partition(":")[2] not in unit
    assert f"EnvironmentFile={settings.prefect_client_credentials}\n" in unit
    assert worker_environment(settings)["PREFECT_API_AUTH_STRING"] == secret


def worker_environment(settings: Settings) -> dict[str, str]:
    return Worker(settings, pool="ci").environment()


def test_only_the_server_gets_its_auth_key_and_its_origin_csrf_and_cors(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", prefect_port=4311)
    with pytest.raises(ConfigError, match="no block-secret key in"):
        server_environment(settings)
    ensure_api_credential(settings)
    adopt_encryption_key(settings)
    server = PrefectServer(settings).environment()
    assert server["PREFECT_SERVER_API_AUTH_STRING"] == api_auth_string(settings)
    Fernet(server["PREFECT_SERVER_ENCRYPTION_KEY"].encode())  # a valid key
    assert server["PREFECT_SERVER_CSRF_PROTECTION_ENABLED"] == "true"
    assert server["PREFECT_SERVER_CORS_ALLOWED_ORIGINS"] == "http://127.0.0.1:4311"
    for client in (worker_environment(settings), DiscoverDaemon(settings).environment()):
        assert "PREFECT_SERVER_ENCRYPTION_KEY" not in client
        assert "PREFECT_SERVER_API_AUTH_STRING" not in client


def prefect_database(settings: Settings, key: str | None) -> Path:
    """A Prefect SQLite database as a server without a configured key leaves it."""
    path = settings.prefect_home / "prefect.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE configuration (key VARCHAR NOT NULL UNIQUE, value JSON NOT NULL)")
        if key is not None:
            connection.execute(
                "INSERT INTO configuration VALUES ('ENCRYPTION_KEY', ?)", (json.dumps({"fernet_key": key}),)
            )
    return path


def database_keys(path: Path) -> list[str]:
    with sqlite3.connect(path) as connection:
        return [row[0] for row in connection.execute("SELECT key FROM configuration")]


def test_a_fresh_stack_gets_a_new_key_kept_outside_the_database(settings: Settings) -> None:
    assert adopt_encryption_key(settings) == "new"
    assert mode(settings.prefect_server_credentials) == 0o600
    assert adopt_encryption_key(settings) == "file"


def test_a_stack_from_before_moves_its_databases_key_out_so_old_blocks_stay_readable(
    settings: Settings,
) -> None:
    old = Fernet.generate_key().decode()
    saved_before = Fernet(old.encode()).encrypt(b'{"value": "s3cret"}')
    database = prefect_database(settings, old)
    ensure_api_credential(settings)
    assert adopt_encryption_key(settings) == "database"
    key = server_environment(settings)["PREFECT_SERVER_ENCRYPTION_KEY"]
    assert Fernet(key.encode()).decrypt(saved_before) == b'{"value": "s3cret"}'
    assert database_keys(database) == [], "the database alone must not decrypt its secrets"
    assert adopt_encryption_key(settings) == "file"


def test_a_database_key_other_than_the_files_is_refused_not_dropped(settings: Settings) -> None:
    assert adopt_encryption_key(settings) == "new"
    database = prefect_database(settings, Fernet.generate_key().decode())
    with pytest.raises(ConfigError, match="other than the one in"):
        adopt_encryption_key(settings)
    assert database_keys(database) == ["ENCRYPTION_KEY"]


def test_an_unreadable_database_names_itself(settings: Settings) -> None:
    settings.prefect_home.mkdir(parents=True)
    (settings.prefect_home / "prefect.db").write_text("not a database")
    with pytest.raises(ConfigError, match="cannot move the block-secret key out of its database"):
        adopt_encryption_key(settings)
    assert not settings.prefect_server_credentials.exists()


def test_prefect_processes_older_than_the_credential_are_restarted_others_kept(settings: Settings) -> None:
    table = ProcessTable(settings.run_dir)
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    old_daemon = table.spawn("discover", sleep, log=settings.log_dir / "discover.log")
    etcd = table.spawn("etcd", sleep, log=settings.log_dir / "etcd.log")
    time.sleep(0.05)
    ensure_api_credential(settings)
    time.sleep(0.05)
    new_worker = table.spawn("worker-ci", sleep, log=settings.log_dir / "worker-ci.log")
    components = [Etcd(settings), DiscoverDaemon(settings), Worker(settings, pool="ci")]
    lines: list[str] = []
    try:
        assert restart_without_credential(settings, components, table, lines.append) == ["discover"]
        assert not old_daemon.alive and etcd.alive and new_worker.alive
        assert lines == ["  discover     restarting: it started before Prefect's current credential"]
    finally:
        for name in ("discover", "etcd", "worker-ci"):
            table.stop(name, timeout=5)


API = "http://prefect.test/api"


class FakePrefect:
    """Prefect's auth and CSRF checks, enough to see what PrefectAuth sends."""

    def __init__(self, *, csrf: bool = True) -> None:
        self.csrf = csrf
        self.issued: list[str] = []
        self.seen: list[httpx.Request] = []
        self.forget_next = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if request.headers.get("Authorization") != "Basic c2hpcGxpbmU6cHc=":  # shipline:pw
            return httpx.Response(401, json={"exception_message": "Unauthorized"})
        if request.url.path == "/api/csrf-token":
            if not self.csrf:
                return httpx.Response(422, json={"detail": "CSRF protection is disabled."})
            token = f"t{len(self.issued)}"
            self.issued.append(token)
            return httpx.Response(200, json={"token": token, "expiration": "2999-01-01T00:00:00+00:00"})
        token_refused = self.forget_next or request.headers.get("Prefect-Csrf-Token") not in self.issued[-1:]
        if self.csrf and request.method == "POST" and token_refused:
            self.forget_next = False
            return httpx.Response(403, json={"detail": "Invalid CSRF token or client identifier."})
        return httpx.Response(200, json={"ok": True})


def test_reads_carry_the_credential_changes_a_csrf_token_fetched_once() -> None:
    fake = FakePrefect()
    auth = PrefectAuth(API, "shipline:pw")
    with httpx.Client(transport=httpx.MockTransport(fake), auth=auth) as client:
        assert client.get(f"{API}/deployments/x").status_code == 200
        assert client.post(f"{API}/deployments/filter", json={}).status_code == 200
        assert client.post(f"{API}/deployments/filter", json={}).status_code == 200
    assert fake.issued == ["t0"], "one token serves until it expires"
    assert [r.url.path for r in fake.seen] == [
        "/api/deployments/x",
        "/api/csrf-token",
        "/api/deployments/filter",
        "/api/deployments/filter",
    ]
    assert fake.seen[-1].headers["Prefect-Csrf-Client"] == auth.client_id
    assert "Prefect-Csrf-Token" not in fake.seen[0].headers


async def test_a_token_the_server_forgot_is_fetched_again_and_the_change_sent_again() -> None:
    fake = FakePrefect()
    auth = PrefectAuth(API, "shipline:pw")
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake), auth=auth) as client:
        assert (await client.post(f"{API}/flow_runs/", json={"a": 1})).status_code == 200
        fake.forget_next = True  # a restarted server
        response = await client.post(f"{API}/flow_runs/", json={"a": 2})
    assert response.status_code == 200 and fake.issued == ["t0", "t1"]
    assert fake.seen[-1].content == b'{"a":2}' and fake.seen[-1].headers["Prefect-Csrf-Token"] == "t1"


def test_a_server_without_csrf_protection_gets_no_token_and_no_more_token_requests() -> None:
    fake = FakePrefect(csrf=False)
    with httpx.Client(transport=httpx.MockTransport(fake), auth=PrefectAuth(API, "shipline:pw")) as client:
        assert client.post(f"{API}/a", json={}).status_code == 200
        assert client.post(f"{API}/b", json={}).status_code == 200
    assert [r.url.path for r in fake.seen] == ["/api/csrf-token", "/api/a", "/api/b"]


def test_a_wrong_credential_gets_the_servers_refusal() -> None:
    fake = FakePrefect()
    with httpx.Client(transport=httpx.MockTransport(fake), auth=PrefectAuth(API, "shipline:no")) as client:
        assert client.post(f"{API}/a", json={}).status_code == 401


def test_an_unreachable_postgresql_is_waited_for_then_named_never_given_a_new_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shipline.stack.credentials.CONNECT_SECONDS", 1.0)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    url = f"postgresql+asyncpg://shipline@127.0.0.1:{closed}/shipline_prefect"
    settings = Settings(home=tmp_path / "home", prefect_database="postgresql", prefect_database_url=url)
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"out of its database \(PostgreSQL\)"):
        adopt_encryption_key(settings)
    assert time.monotonic() - started >= 1.0
    assert not settings.prefect_server_credentials.exists(), "a new key would lose the blocks saved before"
