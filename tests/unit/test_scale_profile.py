"""The scale profile: its settings, the components it adds per host, and what `status` shows of them."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from shipline import cli
from shipline.config import Settings, load_settings
from shipline.errors import ConfigError
from shipline.stack.components import (
    DockerEngine,
    LogsAgent,
    Nginx,
    RegistratorDaemon,
    Worker,
    infrastructure,
    workers,
)
from shipline.stack.lifecycle import ComponentStatus, State, all_components
from shipline.stack.provision import environment_host

DEFAULT_PORTS = ("prefect", "etcd", "etcd_peer", "registry", "nginx", "discover", "web", "postgres")


@pytest.fixture
def scale(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    for port in DEFAULT_PORTS:
        monkeypatch.delenv(f"SHIPLINE_{port.upper()}_PORT", raising=False)
    # Set through monkeypatch, so that what a command writes into the environment is undone afterwards.
    monkeypatch.setenv("SHIPLINE_PROFILE", "scale")
    monkeypatch.setenv("SHIPLINE_HOME", str(tmp_path / "scale-home"))
    return load_settings("scale")


def test_the_scale_profile_has_its_own_home_ports_and_databases(monkeypatch: pytest.MonkeyPatch) -> None:
    for port in DEFAULT_PORTS:
        monkeypatch.delenv(f"SHIPLINE_{port.upper()}_PORT", raising=False)
    monkeypatch.delenv("SHIPLINE_HOME", raising=False)
    monkeypatch.setenv("SHIPLINE_PROFILE", "scale")
    scale, default = load_settings(), load_settings("default")
    assert scale.profile == "scale" and default.profile == "default"
    assert scale.home.name == ".shipline-scale" and default.home.name == ".shipline"
    for port in DEFAULT_PORTS:
        assert getattr(scale, f"{port}_port") == getattr(default, f"{port}_port") + 100
    assert (scale.prefect_database, scale.log_store) == ("postgresql", "postgresql")
    assert {env: (h.engine, h.ip) for env, h in scale.environment_hosts.items()} == {
        "pre": ("pre", "127.0.0.2"),
        "prod": ("prod", "127.0.0.3"),
    }
    assert default.environment_hosts == {}
    assert scale.prefect_environment(credentials=False)["SHIPLINE_PROFILE"] == "scale"  # children inherit it


def test_a_variable_still_overrides_a_profile_default(
    monkeypatch: pytest.MonkeyPatch, scale: Settings
) -> None:
    monkeypatch.setenv("SHIPLINE_NGINX_PORT", "8183")
    assert load_settings("scale").nginx_port == 8183
    assert scale.home.name == "scale-home"


def test_an_unknown_profile_or_a_host_off_loopback_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="there is no profile 'huge'") as caught:
        load_settings("huge")
    assert caught.value.hint and "default, scale" in caught.value.hint
    monkeypatch.setenv("SHIPLINE_ENVIRONMENT_HOSTS", '{"pre": {"engine": "pre", "ip": "192.0.2.1"}}')
    with pytest.raises(ConfigError, match=r"SHIPLINE_ENVIRONMENT_HOSTS=.*not a loopback address"):
        load_settings("scale")
    monkeypatch.setenv(
        "SHIPLINE_ENVIRONMENT_HOSTS",
        '{"pre": {"engine": "one", "ip": "127.0.0.2"}, "prod": {"engine": "one", "ip": "127.0.0.3"}}',
    )
    with pytest.raises(ConfigError, match="engine 'one' is given two addresses"):
        load_settings("scale")


def test_each_host_gets_an_engine_of_its_own(scale: Settings) -> None:
    engines = {c.name: c for c in infrastructure(scale) if isinstance(c, DockerEngine)}
    assert list(engines) == ["docker", "docker-pre", "docker-prod"]
    assert engines["docker"].url == "unix:///var/run/docker.sock"  # ci builds on the machine's engine
    pre, prod = engines["docker-pre"].command(), engines["docker-prod"].command()
    for engine, command in (("pre", pre), ("prod", prod)):
        assert f"--host=unix://{scale.run_dir}/docker-{engine}.sock" in command
        assert f"--data-root={scale.home}/docker-{engine}" in command
        assert f"--exec-root={scale.run_dir}/docker-{engine}" in command
        assert f"--pidfile={scale.run_dir}/dockerd-{engine}.pid" in command
        assert {"--iptables=false", "--bridge=none"} <= set(command)
    main = engines["docker"].command()
    assert not own_paths(pre) & own_paths(prod) and not own_paths(pre) & own_paths(main)


def own_paths(command: list[str]) -> set[str]:
    """The socket, data root, exec root and pid file an engine's command names."""
    options = ("--host=", "--data-root=", "--exec-root=", "--pidfile=")
    return {argument.split("=", 1)[1] for argument in command if argument.startswith(options)}


def test_each_host_registers_and_collects_its_own_environments(scale: Settings) -> None:
    components = {c.name: c for c in infrastructure(scale)}
    registrators = {n: c for n, c in components.items() if isinstance(c, RegistratorDaemon)}
    assert list(registrators) == ["registrator", "registrator-pre", "registrator-prod"]
    prod = registrators["registrator-prod"].command()
    assert prod[prod.index("--docker-host") + 1] == f"unix://{scale.run_dir}/docker-prod.sock"
    assert "--env=prod" in prod and "--ip=127.0.0.3" in prod and "--env=pre" not in prod
    main = registrators["registrator"].command()
    assert "--env=ci" in main and "--ip=127.0.0.1" in main and "--docker-host" not in main
    agents = {n: c for n, c in components.items() if isinstance(c, LogsAgent)}
    assert list(agents) == ["logs-agent", "logs-agent-pre", "logs-agent-prod"]
    pre = agents["logs-agent-pre"].command()
    assert pre[pre.index("--docker-host") + 1] == f"unix://{scale.run_dir}/docker-pre.sock"
    assert pre[pre.index("--host-name") + 1] == "pre"


def test_each_worker_runs_on_its_environments_host(scale: Settings) -> None:
    by_pool = {w.pool: w for w in workers(scale)}
    assert by_pool["prod"].host_name == "prod" and by_pool["ci"].host_name == "main"
    environment = by_pool["prod"].environment()
    assert environment["DOCKER_HOST"] == f"unix://{scale.run_dir}/docker-prod.sock"
    assert environment["SHIPLINE_ADVERTISE_IP"] == "127.0.0.3"
    assert environment["SHIPLINE_PROFILE"] == "scale"
    hosts = {c.name: c.host_name for c in all_components(scale)}
    assert hosts["nginx"] == hosts["discover"] == "prod"  # the edge
    assert hosts["registry"] == hosts["prefect"] == "main"
    assert [hosts[f"etcd-{i}"] for i in (1, 2, 3)] == ["main"] * 3  # a 3-member cluster (over TLS)
    assert scale.etcd_tls and scale.etcd_url.count("https://") == 3


def test_the_default_profile_adds_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPLINE_HOME", str(tmp_path))
    default = load_settings("default")
    names = [c.name for c in all_components(default)]
    assert not [n for n in names if n.endswith(("-pre", "-prod")) and not n.startswith("worker-")]
    assert {c.host_name for c in all_components(default)} == {"main"}
    registrator = next(c for c in infrastructure(default) if isinstance(c, RegistratorDaemon))
    assert registrator.command()[-1] == "registrator"  # every environment, at the stack's address
    assert isinstance(workers(default)[0], Worker)


def test_environment_blocks_name_their_hosts_engine_and_address(scale: Settings, tmp_path: Path) -> None:
    assert environment_host(scale, "prod") == {
        "docker_host": f"unix://{scale.run_dir}/docker-prod.sock",
        "advertise_ip": "127.0.0.3",
    }
    assert environment_host(scale, "ci") == {
        "docker_host": "unix:///var/run/docker.sock",
        "advertise_ip": "127.0.0.1",
    }


def test_status_lists_every_process_under_its_host(scale: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = [
        ComponentStatus(c.name, State.UP, c.url, True, 100 + i, "log", host=c.host_name)
        for i, c in enumerate(all_components(scale))
    ]
    monkeypatch.setattr("shipline.stack.lifecycle.status", lambda settings: fake)
    result = CliRunner().invoke(cli.app, ["status", "--profile", "scale"])
    assert result.exit_code == 0, result.output
    sections: dict[str, list[str]] = {}
    for line in result.output.splitlines():
        if line.startswith("host "):
            current = sections.setdefault(line, [])
        else:
            current.append(line.split()[0])
    assert list(sections) == [
        "host main (127.0.0.1; environments: ci)",
        "host pre (127.0.0.2; environments: pre)",
        "host prod (127.0.0.3; environments: prod)",
    ]
    pre = sections["host pre (127.0.0.2; environments: pre)"]
    assert pre == ["docker-pre", "registrator-pre", "logs-agent-pre", "worker-pre"]
    prod = sections["host prod (127.0.0.3; environments: prod)"]
    assert {"docker-prod", "nginx", "discover", "registrator-prod", "logs-agent-prod", "worker-prod"} == set(
        prod
    )


def test_nginx_and_discover_listen_on_the_edge_hosts_address(scale: Settings, tmp_path: Path) -> None:
    nginx = next(c for c in all_components(scale) if c.name == "nginx")
    assert isinstance(nginx, Nginx)
    assert "listen 127.0.0.3:8180 default_server;" in nginx.render_config()
    assert scale.nginx_url == "http://127.0.0.3:8180" and scale.discover_url == "http://127.0.0.3:9205"
    assert "--resolve shop.prod.localhost:8180:127.0.0.3" in scale.app_url("shop", "prod")
    default = Settings(home=tmp_path / "default")
    assert default.edge_host == "127.0.0.1" and default.nginx_url == "http://127.0.0.1:8080"
    assert default.app_url("shop", "prod") == "http://shop.prod.localhost:8080/"
