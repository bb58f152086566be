"""Prefect's server on PostgreSQL (``SHIPLINE_PREFECT_DATABASE=postgresql``): a second stack in its own home
starts the stack's PostgreSQL, creates Prefect's database there, and Prefect migrates and is provisioned
(work pools, blocks, deployments) in it — no SQLite file — then stops with ``shipline down``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg

from shipline.config import PREFECT_DATABASE, Settings
from tests.cli import shipline
from tests.images import free_ports

START = (
    "from shipline.config import load_settings\n"
    "from shipline.stack.lifecycle import up\n"
    "up(load_settings(), only={'postgres', 'prefect'})\n"
)


def test_prefect_runs_and_is_provisioned_on_the_stacks_postgresql(tmp_path: Path, settings: Settings) -> None:
    prefect, postgres = free_ports(2)
    env = {
        **os.environ,
        "SHIPLINE_HOME": str(tmp_path / "home"),
        "SHIPLINE_PREFECT_PORT": str(prefect),
        "SHIPLINE_POSTGRES_PORT": str(postgres),
        "SHIPLINE_PREFECT_DATABASE": "postgresql",
        "SHIPLINE_DOCKER_SOCKET": str(settings.docker_socket),
    }
    for name in [k for k in env if k.startswith("PREFECT_")]:
        del env[name]  # the second stack's own Prefect settings, not the test session's
    private = Settings(home=tmp_path / "home", prefect_port=prefect, postgres_port=postgres)
    try:
        started = subprocess.run(
            [sys.executable, "-c", START], env=env, capture_output=True, text=True, timeout=400, check=False
        )
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        assert httpx.get(f"{private.prefect_api_url}/health", trust_env=False).text.strip() == "true"
        with psycopg.connect(
            host=private.host, port=postgres, user="shipline", dbname=PREFECT_DATABASE, connect_timeout=5
        ) as connection:
            pools = {row[0] for row in connection.execute("SELECT name FROM work_pool")}
            deployments = connection.execute("SELECT count(*) FROM deployment").fetchone()
            # Blocks were saved (encrypted) with the key from the credential file: none in the database.
            keys = connection.execute("SELECT key FROM configuration WHERE key = 'ENCRYPTION_KEY'").fetchall()
        assert keys == []
        assert (tmp_path / "home" / "credentials" / "prefect-server.env").stat().st_mode & 0o077 == 0
        assert {"ci", "pre", "prod"} <= pools
        assert deployments is not None and deployments[0] > 0
        assert not list(private.prefect_home.glob("*.db")), "Prefect must not have used SQLite"
    finally:
        stopped = shipline("down", env=env, timeout=120)
        assert stopped.returncode == 0, stopped.stderr
    assert "prefect" in stopped.stdout and "postgres" in stopped.stdout
