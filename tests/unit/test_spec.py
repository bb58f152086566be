"""shipline.yaml: a valid spec loads; every problem is named with its field and line."""

from pathlib import Path

import pytest

from shipline.errors import SpecError
from shipline.release.plan import ReleaseRequest
from shipline.spec import EnvironmentSettings, SecretRef, ServiceSpec, load_spec, looks_secret, parse_spec

VALID = """\
app: shop
build:
  command: python3 -m compileall -q app
  artifact: app
test:
  command: python3 -m pytest -q --junitxml=reports/junit.xml tests
  junit: reports/junit.xml
image:
  os: {name: debian, version: bookworm}
  middleware: {name: python3, version: "3.11"}
  command: [python3, -m, app]
service:
  health_path: /healthz
  environments:
    pre: {replicas: 1, environment: {GREETING: hello}}
    prod:
      replicas: 2
auto_tests:
  http:
    - {path: /healthz}
"""


def test_valid_spec_loads_with_defaults(tmp_path: Path) -> None:
    (tmp_path / "shipline.yaml").write_text(VALID)
    spec = load_spec(tmp_path)
    assert spec.app == "shop"
    assert spec.service.environments["prod"].replicas == 2
    assert spec.service.port_variable == "PORT"
    assert spec.scan.tools == ["ruff", "bandit"]
    assert spec.image.copy_artifact_to == "/app"
    assert spec.service.log_retention_days is None


def test_log_retention_is_a_number_of_days_of_one_or_more() -> None:
    spec = parse_spec(
        VALID.replace("  health_path: /healthz", "  health_path: /healthz\n  log_retention_days: 3")
    )
    assert spec.service.log_retention_days == 3
    message = problems(
        VALID.replace("  health_path: /healthz", "  health_path: /healthz\n  log_retention_days: 0")
    )
    assert (
        "shipline.yaml:14 service.log_retention_days: Input should be greater than or equal to 1" in message
    )


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"shipline\.yaml not found"):
        load_spec(tmp_path)


def problems(text: str) -> str:
    with pytest.raises(SpecError) as caught:
        parse_spec(text)
    return caught.value.message


def test_errors_name_field_and_line() -> None:
    text = VALID.replace("replicas: 2", "replicas: 0").replace("app: shop", "app: Shop Front")
    message = problems(text)
    assert "shipline.yaml:1 app: app must be lower-case letters" in message
    assert (
        "shipline.yaml:17 service.environments.prod.replicas: Input should be greater than or equal to 1"
        in message
    )


def test_missing_and_unknown_fields() -> None:
    message = problems(VALID.replace("  artifact: app\n", "  artefact: app\n"))
    assert "shipline.yaml:2 build.artifact: Field required" in message
    assert "shipline.yaml:4 build.artefact: Extra inputs are not permitted" in message


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("app: shop", "app: 'shop; rm -rf /'", "app: app must be"),
        ("app: shop", "app: '{{ 7*7 }}'", "app: app must be"),
        (
            "  artifact: app",
            "  artifact: ../../etc/passwd",
            "build.artifact: must be a path inside the repository",
        ),
        ("health_path: /healthz", "health_path: 'x\\ny'", "service.health_path"),
        ("GREETING: hello", "'BAD KEY': hello", "is not a variable name"),
        ("    pre: {", "    'pre prod': {", "environment name must be"),
        ("version: bookworm}", "version: 'book worm'}", "image.os.version"),
        ("  command: [python3, -m, app]", "  command: []", "image.command"),
    ],
)
def test_hostile_values_are_rejected(old: str, new: str, expected: str) -> None:
    assert old in VALID
    assert expected in problems(VALID.replace(old, new, 1))


def test_not_yaml_names_the_line() -> None:
    assert problems("app: shop\nbuild: [unclosed\n").startswith("shipline.yaml:3: not valid YAML")


def test_not_a_mapping() -> None:
    assert "expected a mapping" in problems("- just\n- a list\n")


SECRETS = VALID.replace("{GREETING: hello}", "{GREETING: hello, DB_PASSWORD: {secret: shop-db}}")


def test_a_variable_may_name_a_secret_block_instead_of_holding_its_value() -> None:
    settings = parse_spec(SECRETS).service.environments["pre"]
    assert settings.environment == {"GREETING": "hello", "DB_PASSWORD": SecretRef(secret="shop-db")}
    assert settings.secrets == {"DB_PASSWORD": "shop-db"}
    # What a release records, and a rollback replays: the reference, never a value.
    dumped = settings.model_dump(mode="json")
    assert dumped["environment"]["DB_PASSWORD"] == {"secret": "shop-db"}
    assert EnvironmentSettings.model_validate(dumped) == settings


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{secret: Shop_DB}", "secret 'Shop_DB' is not a Prefect block name"),
        ("{secret: ''}", "secret '' is not a Prefect block name"),
        ("{secret: [shop-db]}", "secret ['shop-db'] is not a Prefect block name"),
        ("{secret: shop-db, default: x}", "must be text (quote numbers and booleans) or {secret: NAME}"),
        ("{vault: shop-db}", "must be text (quote numbers and booleans) or {secret: NAME}"),
        ("42", "must be text (quote numbers and booleans) or {secret: NAME}"),
    ],
)
def test_a_bad_secret_reference_names_the_variable_and_its_line(value: str, expected: str) -> None:
    message = problems(VALID.replace("{GREETING: hello}", f"{{GREETING: hello, DB_PASSWORD: {value}}}"))
    assert f"shipline.yaml:15 service.environments.pre.environment.DB_PASSWORD: {expected}" in message


def test_an_app_reads_only_the_secret_blocks_named_after_it() -> None:
    assert parse_spec(SECRETS.replace("shop-db", "shop")).service.environments["pre"].secrets
    message = problems(SECRETS.replace("shop-db", "payments-db"))
    assert (
        "service.environments.pre.environment.DB_PASSWORD: secret 'payments-db' is not shop's "
        "(an app reads only the Secret blocks named shop or shop-…)" in message
    )
    # "shopping-db" starts with "shop" but is not one of shop's blocks.
    assert "secret 'shopping-db' is not shop's" in problems(SECRETS.replace("shop-db", "shopping-db"))


def test_a_release_started_by_hand_meets_the_same_rule() -> None:
    service = ServiceSpec.model_validate(
        {"environments": {"pre": {"environment": {"DB_PASSWORD": {"secret": "payments-db"}}}}}
    )
    with pytest.raises(ValueError, match="secret 'payments-db' is not shop's"):
        ReleaseRequest(
            app="shop",
            env="pre",
            image="r/apps/shop",
            digest="sha256:" + "1" * 64,
            sha="a" * 40,
            service=service,
        )


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("DB_PASSWORD", True),
        ("PASSWD", True),
        ("API_KEY", True),
        ("APIKEY", True),
        ("STRIPE_SECRET_KEY", True),
        ("GITHUB_TOKEN", True),
        ("AWS_CREDENTIALS", True),
        ("SSH_PRIVATE_KEY_FILE", True),
        ("GREETING", False),
        ("KEYCLOAK_URL", False),
        ("LOG_LEVEL", False),
        ("DB_HOST", False),
    ],
)
def test_which_names_look_secret(name: str, secret: bool) -> None:
    assert looks_secret(name) is secret


def test_the_address_variable_is_shiplines_to_set() -> None:
    assert parse_spec(VALID).service.address_variable == "BIND"
    clash = VALID.replace("  health_path: /healthz\n", "  health_path: /healthz\n  address_variable: PORT\n")
    assert "address_variable and port_variable are both PORT" in problems(clash)
    set_by_spec = VALID.replace("{GREETING: hello}", "{GREETING: hello, BIND: 0.0.0.0}")
    assert "sets BIND, which Shipline sets per instance" in problems(set_by_spec)
    assert "address_variable" in problems(
        VALID.replace("  health_path:", "  address_variable: bind-to\n  health_path:")
    )
