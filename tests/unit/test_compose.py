"""The compose file: derived from the release request, a golden rendering, Compose as the judge."""

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from shipline.docker import compose_binary
from shipline.errors import DeployError, SpecError
from shipline.release.compose import (
    ComposeFile,
    compose_file_for,
    compose_path,
    render_compose,
    write_compose_file,
)
from shipline.release.plan import ReleaseRequest
from shipline.spec import parse_spec

GOLDEN = Path(__file__).parent / "golden" / "shop-prod.compose.yml"
DIGEST = "sha256:" + "ab" * 32
SPEC = """\
app: shop
build: {command: make, artifact: dist}
image:
  os: {name: debian, version: bookworm}
  middleware: {name: python3, version: "3.11"}
  command: [python3, -m, shop]
service:
  memory: 256m
  cpus: 0.5
  user: "1000:1000"
  capabilities: [NET_BIND_SERVICE, cap_net_raw]
  mounts: [{source: /usr/lib/jvm/java-17-openjdk-amd64, target: /opt/jre}]
  environments:
    prod:
      replicas: 2
      environment: {GREETING: "hello: world", LOG_LEVEL: info}
"""


def request(spec_text: str = SPEC, env: str = "prod") -> ReleaseRequest:
    spec = parse_spec(spec_text)
    return ReleaseRequest(
        app=spec.app,
        env=env,
        image="127.0.0.1:5000/apps/shop",
        digest=DIGEST,
        sha="a" * 40,
        service=spec.service,
    )


def compose_file(
    req: ReleaseRequest, release: int, ports: list[int], allowed: tuple[str, ...] = ("NET_BIND_SERVICE",)
) -> ComposeFile:
    """The compose file in an environment whose block allows ``allowed`` and 1024 pids per instance, on a
    host whose advertise address is 127.0.0.3."""
    return compose_file_for(
        req, release, ports, pids_limit=1024, allowed_capabilities=allowed, address="127.0.0.3"
    )


def run_compose_config(
    text: str, tmp_path: Path, environment: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``docker compose config`` of the file, given ``environment`` besides this process's own."""
    path = tmp_path / "docker-compose.yml"
    path.write_text(text)
    return subprocess.run(
        [compose_binary(), "-f", str(path), "config", "--format", "yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(environment or {})},
        check=False,
    )


def compose_config(text: str, tmp_path: Path, environment: dict[str, str] | None = None) -> dict[str, Any]:
    """The file as Compose itself reads it (``docker compose config``)."""
    done = run_compose_config(text, tmp_path, environment)
    assert done.returncode == 0 and not done.stderr, done.stderr
    return dict(yaml.safe_load(done.stdout))


def test_rendering_matches_the_golden_file() -> None:
    assert render_compose(compose_file(request(), 7, [22000, 22001])) == GOLDEN.read_text()


def test_compose_accepts_the_file_with_host_networking_and_labels(tmp_path: Path) -> None:
    model = compose_config(render_compose(compose_file(request(), 7, [22000, 22001])), tmp_path)
    assert model["name"] == "shop-prod"
    services = model["services"]
    assert sorted(services) == ["shop-22000", "shop-22001"]
    service = services["shop-22001"]
    assert service["network_mode"] == "host"
    assert service["image"] == f"127.0.0.1:5000/apps/shop@{DIGEST}"
    assert service["environment"] == {
        "PORT": "22001",
        "BIND": "127.0.0.3",  # the host's advertise address: instances of two hosts may share a port
        "GREETING": "hello: world",
        "LOG_LEVEL": "info",
    }
    assert service["labels"] == {
        "shipline.app": "shop",
        "shipline.env": "prod",
        "shipline.port": "22001",
        "shipline.release": "7",
        "shipline.health": "/healthz",
    }
    assert service["volumes"][0]["read_only"] is True
    # Rotated json-file logs: what the logs agent follows.
    assert service["logging"] == {"driver": "json-file", "options": {"max-size": "10m", "max-file": "5"}}
    assert "networks" not in model or not model["networks"]


def test_every_instance_has_no_capability_but_those_asked_and_allowed(tmp_path: Path) -> None:
    model = compose_config(render_compose(compose_file(request(), 7, [22000, 22001])), tmp_path)
    for service in model["services"].values():
        assert service["security_opt"] == ["no-new-privileges:true"]
        assert service["cap_drop"] == ["ALL"]
        assert service["cap_add"] == ["NET_BIND_SERVICE"]  # NET_RAW asked for, not allowed: never given
        assert service["pids_limit"] == 1024
        assert service["user"] == "1000:1000"
        assert service["mem_limit"] == str(256 * 1024 * 1024) and service["cpus"] == 0.5  # the spec's own


def test_a_spec_that_asks_for_nothing_gets_nothing_back(tmp_path: Path) -> None:
    spec = SPEC.replace('  user: "1000:1000"\n', "").replace(
        "  capabilities: [NET_BIND_SERVICE, cap_net_raw]\n", ""
    )
    compose = compose_file_for(request(spec), 1, [22000], pids_limit=64, allowed_capabilities=["SYS_ADMIN"])
    service = compose_config(render_compose(compose), tmp_path)["services"]["shop-22000"]
    assert service["cap_drop"] == ["ALL"] and service["security_opt"] == ["no-new-privileges:true"]
    assert (
        "cap_add" not in service and "user" not in service
    )  # the image's user; a block's allowance is no grant
    assert service["pids_limit"] == 64


def test_an_environment_the_spec_does_not_name_gets_no_variables(tmp_path: Path) -> None:
    model = compose_config(render_compose(compose_file(request(env="qa"), 1, [23000])), tmp_path)
    assert model["services"]["shop-23000"]["environment"] == {"PORT": "23000", "BIND": "127.0.0.3"}


def test_dollar_signs_stay_literal(tmp_path: Path) -> None:
    literal = "$HOME ${PATH} $$x"
    spec = SPEC.replace("LOG_LEVEL: info", "RAW: '$HOME ${PATH} $$x'")
    service = compose_config(render_compose(compose_file(request(spec), 1, [22000])), tmp_path)
    # `compose config` prints a compose file, so a literal $ comes back escaped as $$; an interpolated
    # one would have come back as the value of HOME or PATH.
    assert service["services"]["shop-22000"]["environment"]["RAW"] == literal.replace("$", "$$")


def test_a_value_cannot_inject_yaml(tmp_path: Path) -> None:
    hostile = "x\\n    privileged: true\\n    pid: host"
    spec = SPEC.replace("LOG_LEVEL: info", f'EVIL: "{hostile}"')
    model = compose_config(render_compose(compose_file(request(spec), 1, [22000])), tmp_path)
    service = model["services"]["shop-22000"]
    assert service["environment"]["EVIL"] == hostile.replace("\\n", "\n")
    assert "privileged" not in service and "pid" not in service


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("app: shop", "app: 'shop; rm -rf /'", "app"),
        ("    prod:", "    'prod\\nname: x':", "service.environments"),
        ("GREETING:", "'bad key':", "environment"),
        ("GREETING:", "PORT:", "sets PORT, which Shipline sets per instance"),
        ("source: /usr/lib/jvm/java-17-openjdk-amd64", "source: relative/path", "mounts"),
        ("source: /usr/lib/jvm/java-17-openjdk-amd64", "source: /etc/../root", "mounts"),
        ("memory: 256m", "memory: lots", "memory"),
        ("memory: 256m", "health_path: healthz", "health_path"),
        ("memory: 256m", "port_variable: port-var", "port_variable"),
        ('user: "1000:1000"', 'user: "0\\nprivileged: true"', "service.user"),
        ('user: "1000:1000"', "user: 'root; id'", "service.user"),
        ("[NET_BIND_SERVICE, cap_net_raw]", "[ALL]", "not a Linux capability: 'ALL'"),
        ("[NET_BIND_SERVICE, cap_net_raw]", "[NET_BIND_SERVICE, SYS_EVERYTHING]", "'SYS_EVERYTHING'"),
    ],
)
def test_hostile_or_invalid_values_never_reach_a_compose_file(old: str, new: str, field: str) -> None:
    # The spec is the one place these rules live: a value it refuses never gets as far as a request.
    with pytest.raises(SpecError) as caught:
        parse_spec(SPEC.replace(old, new, 1))
    assert field in caught.value.message


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"digest": "latest"}, "digest"),
        ({"image": "127.0.0.1:5000/apps/shop:latest@sha256:1"}, "image"),
        ({"env": "{{ 7*7 }}"}, "env"),
    ],
)
def test_a_request_refuses_what_the_spec_does_not_check(override: dict[str, str], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ReleaseRequest.model_validate({**request().model_dump(), **override})


def test_the_file_is_written_whole_under_the_release(tmp_path: Path) -> None:
    compose = compose_file(request(), 7, [22000])
    releases = tmp_path / "releases"
    path, text = write_compose_file(releases, compose)
    assert path == compose_path(releases, compose) == releases / "shop" / "prod" / "7" / path.name
    assert path.read_text() == text == render_compose(compose)
    assert [p.name for p in path.parent.iterdir()] == ["docker-compose.yml"]  # no temporary file left


def test_golden_file_is_valid_yaml() -> None:
    document = yaml.safe_load(GOLDEN.read_text())
    assert document["services"]["shop-22000"]["network_mode"] == "host"
    assert document["services"]["shop-22000"]["cap_drop"] == ["ALL"]


SECRET_VALUE = 's3cr$t ${HOME} "quoted"\nsecond line'
PLAIN_TOKEN = "plain-token-7f3a"
WITH_SECRETS = SPEC.replace(
    "LOG_LEVEL: info", f"LOG_LEVEL: info, DB_PASSWORD: {{secret: shop-db}}, API_TOKEN: {PLAIN_TOKEN}"
)


def test_secret_values_are_never_written_only_named(tmp_path: Path) -> None:
    compose = compose_file(request(WITH_SECRETS), 7, [22000])
    releases = tmp_path / "releases"
    _, text = write_compose_file(releases, compose)
    assert PLAIN_TOKEN not in text  # a plain value under a secret-looking name stays out too
    assert '"GREETING": "hello: world"' in text  # …while ordinary values are written as before
    assert (
        '"DB_PASSWORD": "${SHIPLINE_SECRET_DB_PASSWORD:?no value given for DB_PASSWORD '
        '(from the Secret block shop-db)}"' in text
    )
    assert '"API_TOKEN": "${SHIPLINE_SECRET_API_TOKEN:?' in text
    assert compose.secrets == {"DB_PASSWORD": "shop-db"}
    passed = compose.passed_environment({"DB_PASSWORD": SECRET_VALUE})
    assert passed == {"SHIPLINE_SECRET_DB_PASSWORD": SECRET_VALUE, "SHIPLINE_SECRET_API_TOKEN": PLAIN_TOKEN}
    for path in releases.rglob("*"):
        assert path.is_dir() or (SECRET_VALUE not in path.read_text() and PLAIN_TOKEN not in path.read_text())


def test_compose_takes_each_secret_from_its_environment_literally(tmp_path: Path) -> None:
    compose = compose_file(request(WITH_SECRETS), 7, [22000])
    text = render_compose(compose)
    model = compose_config(text, tmp_path, compose.passed_environment({"DB_PASSWORD": SECRET_VALUE}))
    variables = model["services"]["shop-22000"]["environment"]
    # `compose config` prints $ as $$: the value is taken as it is, never interpolated further.
    assert variables["DB_PASSWORD"] == SECRET_VALUE.replace("$", "$$")
    assert variables["API_TOKEN"] == PLAIN_TOKEN
    assert variables["GREETING"] == "hello: world"
    # Run by hand without the deploy's environment, Compose stops and says where the value comes from.
    # (Compose names the first it meets, in no fixed order.)
    bare = run_compose_config(text, tmp_path, {"SHIPLINE_SECRET_API_TOKEN": PLAIN_TOKEN})
    assert (
        "required variable SHIPLINE_SECRET_DB_PASSWORD is missing a value: "
        "no value given for DB_PASSWORD (from the Secret block shop-db)" in bare.stderr
    )


def test_a_secret_left_unread_is_refused_before_compose_runs() -> None:
    compose = compose_file(request(WITH_SECRETS), 7, [22000])
    with pytest.raises(DeployError, match="shop-prod: no value was read for DB_PASSWORD"):
        compose.passed_environment({})


def test_the_address_is_an_ip_address_and_its_variable_the_specs() -> None:
    with pytest.raises(ValidationError, match="address"):
        compose_file_for(request(), 1, [22000], pids_limit=64, address="127.0.0.3\n    privileged: true")
    spec = SPEC.replace("service:\n", "service:\n  address_variable: LISTEN_HOST\n", 1)
    assert '"LISTEN_HOST": "127.0.0.3"' in render_compose(compose_file(request(spec), 1, [22000]))
