"""Databases of the stack's PostgreSQL for one test each: made empty, owned by the log store's role, dropped
after, so tests never see each other's records."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from shipline.config import Settings
from shipline.stack.components import POSTGRES_USER


def admin(settings: Settings, dbname: str = "postgres") -> psycopg.Connection[tuple[Any, ...]]:
    """A superuser connection (autocommit) to the stack's server; fails the test when it does not answer."""
    try:
        return psycopg.connect(
            host=settings.host,
            port=settings.postgres_port,
            user=POSTGRES_USER,
            dbname=dbname,
            autocommit=True,
            connect_timeout=5,
        )
    except psycopg.Error as exc:
        pytest.fail(
            f"the stack's PostgreSQL does not answer at {settings.host}:{settings.postgres_port}: {exc}\n"
            "hint: shipline up starts it (Debian's postgresql package: make install)",
            pytrace=False,
        )


def fresh_database(settings: Settings) -> Iterator[str]:
    """Yield the connection URL of a new empty database; drop it afterwards."""
    name = f"logs_test_{uuid.uuid4().hex[:12]}"
    with admin(settings) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {} OWNER shipline").format(sql.Identifier(name)))
    yield make_conninfo(settings.postgres_url, dbname=name)
    with admin(settings) as connection:
        connection.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def database_name(url: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(url)["dbname"])
