"""The credentials of the stack's control planes, generated once under ``SHIPLINE_HOME``.

Build and app containers share the host network with the control planes, so each of them must answer only
Shipline. For Prefect that is:

- the **API credential** (``credentials/prefect-api.env``: ``PREFECT_API_AUTH_STRING=shipline:…``), which
  the server requires of every request but its health check (``PREFECT_SERVER_API_AUTH_STRING``) and every
  client sends — the CLI, the workers, the daemons, the tests, and the UI after its login form;
- the **block-secret key** (``credentials/prefect-server.env``: ``PREFECT_SERVER_ENCRYPTION_KEY=…``), a
  Fernet key Prefect encrypts block documents with. Without it Prefect keeps its key in its own database,
  beside what it encrypts; with it the database alone reveals no secret. A stack that ran before keeps its
  blocks readable: its key is moved out of the database into the file (``adopt_encryption_key``).

When Prefect's API and its background services run as two processes, they meet in the stack's Redis,
which answers only its **password** (``credentials/redis.env``: ``PREFECT_REDIS_MESSAGING_PASSWORD=…``,
the variable prefect-redis reads): the two server processes get it, no client of the stack does.

The directory is the stack user's alone (0700) and each file 0600. Nothing here prints a credential.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from cryptography.fernet import Fernet

from shipline.config import Settings, read_environment_file
from shipline.errors import ConfigError
from shipline.files import write_atomically

API_USER = "shipline"
"""The user part of Prefect's ``user:password`` auth string (Prefect checks the whole string)."""
CLIENT_VARIABLE = "PREFECT_API_AUTH_STRING"
SERVER_AUTH_VARIABLE = "PREFECT_SERVER_API_AUTH_STRING"
KEY_VARIABLE = "PREFECT_SERVER_ENCRYPTION_KEY"
REDIS_PASSWORD_VARIABLE = "PREFECT_REDIS_MESSAGING_PASSWORD"  # noqa: S105 - a variable's name
CONNECT_SECONDS = 60.0
"""How long a PostgreSQL that refuses connections (still starting) is waited for."""
_DATABASE_KEY = "ENCRYPTION_KEY"
"""Where Prefect keeps its generated key when none is configured: ``configuration`` table, this key."""


def _write_secret_file(path: Path, variable: str, value: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    write_atomically(path, f"{variable}={value}\n", mode=0o600)


def _ensure_secret(path: Path, variable: str, make: Callable[[], str]) -> bool:
    """Write ``variable=make()`` into ``path`` (0600) unless it holds a value for it; True if written."""
    if read_environment_file(path).get(variable):
        return False
    _write_secret_file(path, variable, make())
    return True


def _read_secret(path: Path, variable: str, missing: str) -> str:
    """The value of ``variable`` in ``path``.

    Raises:
        ConfigError: saying ``missing``, if the file holds none (``up`` has not generated it yet).
    """
    value = read_environment_file(path).get(variable)
    if not value:
        raise ConfigError(f"{missing} in {path}", hint="shipline up generates it")
    return value


def ensure_api_credential(settings: Settings) -> bool:
    """Generate Prefect's API credential unless the stack has one.

    Returns:
        True if it was generated just now.
    """
    return _ensure_secret(
        settings.prefect_client_credentials,
        CLIENT_VARIABLE,
        lambda: f"{API_USER}:{secrets.token_urlsafe(32)}",
    )


def api_auth_string(settings: Settings) -> str:
    """The auth string the stack's Prefect server requires.

    Raises:
        ConfigError: if ``up`` has not generated it yet.
    """
    return _read_secret(settings.prefect_client_credentials, CLIENT_VARIABLE, "prefect: no API credential")


def server_environment(settings: Settings) -> dict[str, str]:
    """What the Prefect server alone gets: the auth string it requires and the block-secret key.

    Raises:
        ConfigError: if either has not been generated yet.
    """
    key = read_environment_file(settings.prefect_server_credentials).get(KEY_VARIABLE)
    if not key:
        raise ConfigError(
            f"prefect: no block-secret key in {settings.prefect_server_credentials}",
            hint="shipline up generates it",
        )
    return {SERVER_AUTH_VARIABLE: api_auth_string(settings), KEY_VARIABLE: key}


def ensure_redis_password(settings: Settings) -> bool:
    """Generate the stack Redis's password unless the stack has one.

    Returns:
        True if it was generated just now.
    """
    return _ensure_secret(
        settings.redis_credentials, REDIS_PASSWORD_VARIABLE, lambda: secrets.token_urlsafe(32)
    )


def redis_password(settings: Settings) -> str:
    """The password the stack's Redis requires.

    Raises:
        ConfigError: if ``up`` has not generated it yet.
    """
    return _read_secret(settings.redis_credentials, REDIS_PASSWORD_VARIABLE, "redis: no password")


def adopt_encryption_key(settings: Settings) -> str:
    """Make sure the block-secret key lives in its file and not in Prefect's database.

    Call it only while the Prefect server is stopped: a running server that finds no key in its database
    writes a new one. A database that holds a key (a stack started before the file existed) gives it up:
    the key is written to the file first, then deleted from the database, so blocks saved before stay
    readable. A fresh stack gets a new key.

    Returns:
        Where the key came from: ``"file"``, ``"database"`` or ``"new"``.

    Raises:
        ConfigError: if Prefect's database cannot be read or changed.
    """
    path = settings.prefect_server_credentials
    stored = database_encryption_key(settings)
    if kept := read_environment_file(path).get(KEY_VARIABLE):
        if stored is not None and stored != kept:
            raise ConfigError(
                f"prefect: its database holds a block-secret key other than the one in {path}",
                hint="blocks were saved by a server started without Shipline's key: move that file away "
                "to adopt the database's key, and save the blocks written since again",
            )
        origin = "file"
    elif stored is not None:
        _write_secret_file(path, KEY_VARIABLE, stored)
        origin = "database"
    else:
        _write_secret_file(path, KEY_VARIABLE, Fernet.generate_key().decode())
        return "new"
    if stored is not None:
        _forget_database_key(settings)
    return origin


def _sqlite_path(settings: Settings) -> Path:
    return settings.prefect_home / "prefect.db"


def _postgres_conninfo(settings: Settings) -> str | None:
    url = settings.prefect_database_connection_url
    return None if url is None else url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _connect_postgres(conninfo: str) -> psycopg.Connection[tuple[object, ...]] | None:
    """A connection to Prefect's PostgreSQL database; None when its role or database does not exist yet.

    The stack's own PostgreSQL may be starting at this moment (``up`` starts it just before Prefect):
    a refused connection is tried again for a while rather than taken for an empty database, which would
    cost the blocks saved with the key it holds.
    """
    deadline = time.monotonic() + CONNECT_SECONDS
    while True:
        try:
            return psycopg.connect(conninfo, connect_timeout=5)
        except psycopg.OperationalError as exc:
            if "does not exist" in str(exc):  # a first start: the role and database come later
                return None
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def database_encryption_key(settings: Settings) -> str | None:
    """The block-secret key Prefect keeps in its own database, if it holds one.

    Raises:
        ConfigError: if the database cannot be read.
    """
    query = "SELECT value FROM configuration WHERE key = %s"
    try:
        if (conninfo := _postgres_conninfo(settings)) is not None:
            if (opened := _connect_postgres(conninfo)) is None:
                return None
            with opened as connection:
                if connection.execute("SELECT to_regclass('configuration')").fetchone() == (None,):
                    return None
                row = connection.execute(query, (_DATABASE_KEY,)).fetchone()
        else:
            if not _sqlite_path(settings).exists():
                return None
            with sqlite3.connect(_sqlite_path(settings), timeout=30) as connection:
                if not connection.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'configuration'"
                ).fetchone():
                    return None
                row = connection.execute(query.replace("%s", "?"), (_DATABASE_KEY,)).fetchone()
    except (sqlite3.Error, psycopg.Error) as exc:
        raise _database_error(settings, exc) from exc
    if row is None:
        return None
    value = row[0] if isinstance(row[0], dict) else json.loads(str(row[0]))
    return str(value["fernet_key"])


def _forget_database_key(settings: Settings) -> None:
    statement = "DELETE FROM configuration WHERE key = %s"
    try:
        if (conninfo := _postgres_conninfo(settings)) is not None:
            with psycopg.connect(conninfo, connect_timeout=5) as connection:
                connection.execute(statement, (_DATABASE_KEY,))
        else:
            with sqlite3.connect(_sqlite_path(settings), timeout=30) as connection:
                connection.execute(statement.replace("%s", "?"), (_DATABASE_KEY,))
    except (sqlite3.Error, psycopg.Error) as exc:
        raise _database_error(settings, exc) from exc


def _database_error(settings: Settings, exc: Exception) -> ConfigError:
    where = "PostgreSQL" if _postgres_conninfo(settings) else str(_sqlite_path(settings))
    return ConfigError(
        f"prefect: cannot move the block-secret key out of its database ({where}): {exc}",
        hint=f"read {settings.log_dir / 'prefect.log'}; the key stays where it was until this succeeds",
    )
