"""Logs of real containers collected by the real agent process into each real store: every line exactly
once through ``kill -9``, log rotation, a container restart and a store that stops taking writes.

Each test runs its own agent (``shipline logs agent``) with a log store of its own (a SQLite file under a
temporary home, or a fresh PostgreSQL database), so the stack's agent and other tests do not count.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from psycopg import sql

from shipline.config import Settings
from shipline.docker import docker_client
from shipline.logs.agent import READY
from shipline.logs.records import StoredRecord
from shipline.logs.store import LogStore
from shipline.logs.stores import open_store
from tests.cli import shipline
from tests.images import busybox_web_image
from tests.postgres_db import admin, database_name, fresh_database
from tests.waiting import eventually

Store = str  # "sqlite" or "postgresql"


@pytest.fixture(scope="module")
def printer(settings: Settings) -> str:
    """A busybox image that runs the shell command it is given."""
    client = docker_client(settings.docker_url)
    repository = f"{settings.registry_address}/tests/log-printer"
    busybox_web_image(client, repository, "1", {}, command=["sh"])
    return f"{repository}:1"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_environment(
    request: pytest.FixtureRequest, settings: Settings, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """Environment of an agent, the CLI and ``open_store`` that points at a store of this test only."""
    environment = {**os.environ, "SHIPLINE_HOME": str(tmp_path / "home")}
    if request.param == "sqlite":
        yield environment
        return
    for url in fresh_database(settings):
        yield {**environment, "SHIPLINE_LOG_STORE": "postgresql", "SHIPLINE_LOG_STORE_URL": url}


class AgentProcess:
    """``shipline logs agent`` run by a test, killed or stopped by its pid."""

    def __init__(self, environment: dict[str, str], log: Path) -> None:
        self.environment = environment
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            out.write(b"\n--- test: starting the agent\n")
            self.process = subprocess.Popen(
                [sys.executable, "-m", "shipline", "logs", "agent"],
                env=self.environment,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

        def ready() -> bool:
            text = self.log.read_text(errors="replace")
            assert self.process is not None and self.process.poll() is None, text[-2000:]
            return READY in text[text.rfind("--- test: starting") :]

        eventually(ready, timeout=30, what="the agent logging that it is ready")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def agent(store_environment: dict[str, str], tmp_path: Path) -> Iterator[AgentProcess]:
    running = AgentProcess(store_environment, tmp_path / "agent.log")
    yield running
    running.stop()


def opened(environment: dict[str, str]) -> LogStore:
    from shipline.config import Settings as Loaded

    keys = ("SHIPLINE_HOME", "SHIPLINE_LOG_STORE", "SHIPLINE_LOG_STORE_URL")
    overrides = {k[len("SHIPLINE_") :].lower(): environment[k] for k in keys if k in environment}
    return open_store(Loaded(**overrides))  # type: ignore[arg-type]


def stored(environment: dict[str, str], app: str) -> list[StoredRecord]:
    with opened(environment) as store:
        return store.after(0, app=app, limit=1_000_000)


def run_printer(
    settings: Settings, image: str, app: str, script: str, **options: object
) -> docker.models.containers.Container:
    client = docker_client(settings.docker_url)
    return client.containers.run(
        image,
        ["sh", "-c", script],
        detach=True,
        network_mode="none",
        labels={
            "shipline.app": app,
            "shipline.env": "pre",
            "shipline.release": "1",
            "shipline.port": "20999",
        },
        **options,
    )


CHINESE = ["连接数据库失败", "订单已创建", "用户登录成功", "支付超时"]


def lines_script(count: int, pause_every: int = 200, pause: str = "0.05") -> str:
    """A shell loop printing ``count`` known lines, every fourth in Chinese, pausing now and then."""
    return (
        f"i=0; while [ $i -lt {count} ]; do "
        f'case $((i % 4)) in 0) echo "line $i {CHINESE[0]}";; 1) echo "line $i ok";; '
        f'2) echo "line $i {CHINESE[1]} id=$i";; 3) echo "line $i /api/v1/items/$i" >&2;; esac; '
        f"i=$((i+1)); [ $((i % {pause_every})) -eq 0 ] && sleep {pause}; done; exit 0"
    )


def expected_lines(count: int) -> list[str]:
    texts = {0: f"{CHINESE[0]}", 1: "ok", 2: f"{CHINESE[1]} id={{i}}", 3: "/api/v1/items/{i}"}
    return [f"line {i} " + texts[i % 4].format(i=i) for i in range(count)]


def test_every_line_once_through_a_kill_9_mid_stream_and_found_by_search(
    settings: Settings, printer: str, app: str, agent: AgentProcess, store_environment: dict[str, str]
) -> None:
    count = 4000
    agent.start()
    container = run_printer(settings, printer, app, lines_script(count, pause_every=200, pause="0.1"))
    eventually(
        lambda: len(stored(store_environment, app)) > 200, timeout=60, what="the first lines collected"
    )
    agent.kill()  # mid-stream, possibly mid-transaction
    written_while_down = len(stored(store_environment, app))
    time.sleep(0.5)
    agent.start()
    container.wait(timeout=120)
    eventually(
        lambda: len(stored(store_environment, app)) >= count,
        timeout=60,
        what="every printed line stored",
    )
    time.sleep(1.0)  # a duplicate would arrive now
    records = stored(store_environment, app)
    messages = [r.record.message for r in records]
    assert len(messages) == count, f"{len(messages)} stored for {count} printed"
    assert sorted(messages) == sorted(expected_lines(count))
    assert written_while_down < count
    assert {r.record.stream for r in records} == {"stdout", "stderr"}
    assert {r.record.tags.container for r in records} == {container.id[:12]}
    # The shell finds them: each Chinese phrase as often as it was printed, and single lines.
    for phrase, expected in ((CHINESE[0], count // 4), (CHINESE[1], count // 4)):
        done = shipline(
            "logs", "search", phrase, "--app", app, "--count", "--limit", "10000", env=store_environment
        )
        assert done.returncode == 0, done.stderr
        assert int(done.stdout) == expected
    done = shipline(
        "logs", "search", f'"line 3142 {CHINESE[1]}"', "--app", app, "--json", env=store_environment
    )
    assert done.returncode == 0, done.stderr
    assert '"message": "line 3142 订单已创建 id=3142"' in done.stdout


def test_rotation_and_a_restart_during_a_burst_lose_and_repeat_nothing(
    settings: Settings, printer: str, app: str, agent: AgentProcess, store_environment: dict[str, str]
) -> None:
    agent.start()
    # Each run prints its own id, so the lines of the two runs (before and after the restart) differ.
    script = (
        "run=$(cat /proc/sys/kernel/random/uuid); i=0; while [ $i -lt 4000 ]; do "
        'echo "$run $i padding-padding-padding-padding-padding"; i=$((i+1)); '
        "[ $((i % 500)) -eq 0 ] && sleep 0.1; done; sleep 30"
    )
    container = run_printer(
        settings,
        printer,
        app,
        script,
        log_config=docker.types.LogConfig(type="json-file", config={"max-size": "40k", "max-file": "50"}),
    )
    eventually(
        lambda: len(stored(store_environment, app)) > 1000, timeout=60, what="the first lines collected"
    )
    container.restart(timeout=1)  # mid-burst; the second run appends to the same rotated logs
    eventually(
        lambda: b" 3999 padding" in container.logs() and container.logs().count(b" 3999 padding") == 2,
        timeout=60,
        what="the second run printing its last line",
    )
    printed = [line for line in container.logs().decode().splitlines() if line]
    container.reload()
    log_dir = Path(container.attrs["LogPath"]).parent
    assert len(list(log_dir.glob("*-json.log.*"))) >= 5, "the burst should have rotated several times"
    eventually(
        lambda: len(stored(store_environment, app)) >= len(printed),
        timeout=60,
        what="every printed line stored",
    )
    time.sleep(1.0)
    messages = [r.record.message for r in stored(store_environment, app)]
    assert sorted(messages) == sorted(printed)


def test_a_store_that_refuses_writes_is_waited_out_without_loss(
    settings: Settings,
    printer: str,
    app: str,
    agent: AgentProcess,
    store_environment: dict[str, str],
    tmp_path: Path,
) -> None:
    """PostgreSQL stops taking connections (or SQLite is locked by another writer) in mid-stream."""
    count = 3000
    agent.start()
    container = run_printer(settings, printer, app, lines_script(count, pause_every=100, pause="0.1"))
    eventually(
        lambda: len(stored(store_environment, app)) > 100, timeout=60, what="the first lines collected"
    )
    url = store_environment.get("SHIPLINE_LOG_STORE_URL")
    if url is None:
        import sqlite3

        blocker = sqlite3.connect(
            Path(store_environment["SHIPLINE_HOME"]) / "logstore" / "logs.db", isolation_level=None
        )
        blocker.execute("BEGIN EXCLUSIVE")
        time.sleep(8)  # longer than the agent's busy timeout: it backs off and keeps its batch
        blocker.execute("ROLLBACK")
        blocker.close()
    else:
        name = database_name(url)
        with admin(settings) as connection:
            connection.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name))
            )
            connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
            time.sleep(5)
            connection.execute(
                sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(name))
            )
    container.wait(timeout=120)
    eventually(
        lambda: len(stored(store_environment, app)) >= count,
        timeout=60,
        what="every printed line stored",
    )
    time.sleep(1.0)
    assert sorted(r.record.message for r in stored(store_environment, app)) == sorted(expected_lines(count))
    assert "trying again" in (tmp_path / "agent.log").read_text(), "the agent never saw the store refuse"
