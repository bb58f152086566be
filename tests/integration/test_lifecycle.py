"""A second, small stack (real etcd, registry and nginx) in its own home on free ports: up, up again, down."""

import json
import os
from pathlib import Path

from shipline.config import Settings
from shipline.stack.lifecycle import State, status, up
from shipline.stack.processes import ProcessTable
from tests.cli import shipline
from tests.images import free_ports
from tests.processes import group_members
from tests.stack_fixture import COMPONENTS


def test_up_twice_then_down_leaves_nothing_running(tmp_path: Path) -> None:
    prefect, etcd, peer, registry, nginx, discover, web, postgres = free_ports(8)
    env = {
        "SHIPLINE_HOME": str(tmp_path / "home"),
        "SHIPLINE_PREFECT_PORT": str(prefect),
        "SHIPLINE_ETCD_PORT": str(etcd),
        "SHIPLINE_ETCD_PEER_PORT": str(peer),
        "SHIPLINE_REGISTRY_PORT": str(registry),
        "SHIPLINE_NGINX_PORT": str(nginx),
        "SHIPLINE_DISCOVER_PORT": str(discover),
        "SHIPLINE_WEB_PORT": str(web),
        "SHIPLINE_POSTGRES_PORT": str(postgres),
        "SHIPLINE_DOCKER_SOCKET": str(tmp_path / "no-docker.sock"),
    }
    settings = Settings(**{k.removeprefix("SHIPLINE_").lower(): v for k, v in env.items()})  # type: ignore[arg-type]
    subset = {"etcd", "registry", "nginx"}

    first = up(settings, only=subset, report=lambda _: None)
    assert sorted(first.started) == sorted(subset)
    states = {c.name: c for c in status(settings)}
    assert all(states[name].state is State.UP and states[name].managed for name in subset)
    records = [r for r in ProcessTable(settings.run_dir).all() if r.name in subset]
    assert len(records) == 3

    second = up(settings, only=subset, report=lambda _: None)
    assert second.started == []
    assert {c.name: c.pid for c in status(settings)} == {name: c.pid for name, c in states.items()}

    cli_env = {**os.environ, **env}
    stopped = shipline("down", env=cli_env)
    assert stopped.returncode == 0, stopped.stderr
    assert "Stopped nginx, registry, etcd." in stopped.stdout
    report = shipline("status", "--json", env=cli_env, timeout=60)
    document = json.loads(report.stdout)
    assert {name: c["state"] for name, c in document["components"].items()} == dict.fromkeys(
        COMPONENTS, "down"
    )
    for record in records:
        assert not record.alive
        assert group_members(record.pid) == [], f"{record.name} left processes behind"
    assert ProcessTable(settings.run_dir).all() == []
    assert (settings.home / "etcd").is_dir(), "down keeps data"
