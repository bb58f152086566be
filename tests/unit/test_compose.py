"""The compose file: validated values, a golden rendering, and Compose's own parser as the judge."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from shipline.compose import build_deployment, check_compose, render_compose
from shipline.deploy import compose_binary
from shipline.errors import ConfigError

GOLDEN = Path(__file__).parent / "golden" / "shop-prod.compose.yml"
DIGEST = "sha256:" + "ab" * 32


def values(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "app": "shop",
        "env": "prod",
        "release": 7,
        "image": "127.0.0.1:5000/apps/shop",
        "digest": DIGEST,
        "instances": [{"port": 22000}, {"port": 22001}],
        "environment": {"GREETING": "hello: world", "LOG_LEVEL": "info"},
        "mounts": [{"source": "/usr/lib/jvm/java-17-openjdk-amd64", "target": "/opt/jre"}],
        "cpus": 0.5,
        "memory": "256m",
        "command": ["python3", "-m", "shop"],
    }
    return base | overrides


def test_rendering_matches_the_golden_file() -> None:
    assert render_compose(build_deployment(**values())) == GOLDEN.read_text()


def test_compose_accepts_the_file_with_host_networking_and_labels(tmp_path: Path) -> None:
    path = tmp_path / "docker-compose.yml"
    path.write_text(render_compose(build_deployment(**values())))
    model = check_compose(path, compose_binary())
    assert model["name"] == "shop-prod"
    services = model["services"]
    assert sorted(services) == ["shop-22000", "shop-22001"]
    service = services["shop-22001"]
    assert service["network_mode"] == "host"
    assert service["image"] == f"127.0.0.1:5000/apps/shop@{DIGEST}"
    assert service["environment"] == {"PORT": "22001", "GREETING": "hello: world", "LOG_LEVEL": "info"}
    assert service["labels"] == {
        "shipline.app": "shop",
        "shipline.env": "prod",
        "shipline.port": "22001",
        "shipline.release": "7",
        "shipline.health": "/healthz",
    }
    assert service["volumes"][0]["read_only"] is True
    assert "networks" not in model or not model["networks"]


def test_dollar_signs_stay_literal(tmp_path: Path) -> None:
    path = tmp_path / "docker-compose.yml"
    literal = "$HOME ${PATH} $$x"
    path.write_text(
        render_compose(build_deployment(**values(environment={"RAW": literal}, command=["echo", literal])))
    )
    service = check_compose(path, compose_binary())["services"]["shop-22000"]
    # `compose config` prints a compose file, so a literal $ comes back escaped as $$; an interpolated
    # one would have come back as the value of HOME or PATH.
    assert service["environment"]["RAW"] == literal.replace("$", "$$")
    assert service["command"] == ["echo", literal.replace("$", "$$")]


def test_a_value_cannot_inject_yaml(tmp_path: Path) -> None:
    hostile = "x\n    privileged: true\n    pid: host"
    path = tmp_path / "docker-compose.yml"
    path.write_text(
        render_compose(build_deployment(**values(environment={"EVIL": hostile}, command=[hostile])))
    )
    service = check_compose(path, compose_binary())["services"]["shop-22000"]
    assert service["environment"]["EVIL"] == hostile
    assert "privileged" not in service and "pid" not in service


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"app": "shop; rm -rf /"}, "app"),
        ({"app": "Shop"}, "app"),
        ({"env": "prod\nname: x"}, "env"),
        ({"env": "{{ 7*7 }}"}, "env"),
        ({"instances": [{"port": 70000}]}, "port"),
        ({"instances": [{"port": "22000; x"}]}, "port"),
        ({"instances": [{"port": 22000}, {"port": 22000}]}, "instance ports repeat"),
        ({"instances": []}, "instances"),
        ({"digest": "latest"}, "digest"),
        ({"image": "127.0.0.1:5000/apps/shop:latest@sha256:1"}, "image"),
        ({"environment": {"bad key": "x"}}, "environment"),
        ({"environment": {"PORT": "1"}}, "PORT is set per instance"),
        ({"mounts": [{"source": "relative/path", "target": "/x"}]}, "mounts"),
        ({"mounts": [{"source": "/etc/../root", "target": "/x"}]}, "mounts"),
        ({"memory": "lots"}, "memory"),
        ({"health_path": "healthz"}, "health_path"),
        ({"port_variable": "port-var"}, "port_variable"),
    ],
)
def test_hostile_or_invalid_values_are_rejected_before_rendering(
    override: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        build_deployment(**values(**override))
    assert field in caught.value.message


def test_golden_file_is_valid_yaml() -> None:
    document = yaml.safe_load(GOLDEN.read_text())
    assert document["services"]["shop-22000"]["network_mode"] == "host"
