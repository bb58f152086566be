import pytest

from shipline.discovery.instances import Instance, instance_key, parse_key, prefix
from shipline.errors import ConfigError


def test_key_layout_is_the_legacy_confd_one() -> None:
    assert instance_key("shop", "pre", "127.0.0.1", 21000) == "/shop_PRE/127.0.0.1-21000"
    assert prefix("shop", "prod") == "/shop_PROD/"
    assert Instance(app="shop", env="pre", ip="127.0.0.1", port=21000).address == "127.0.0.1:21000"


def test_parse_round_trips_and_ignores_other_keys() -> None:
    assert parse_key("/shop_PRE/127.0.0.1-21000") == Instance(
        app="shop", env="pre", ip="127.0.0.1", port=21000
    )
    for other in (
        "/shipline/releases/shop/pre/000001",
        "/shop_PRE/127.0.0.1",
        "/shop_PRE/999.1.1.1-80",
        "/shop_PRE/127.0.0.1-70000",
        "/Shop_PRE/127.0.0.1-80",
        "/shop_PRE/127.0.0.1-80/x",
    ):
        assert parse_key(other) is None, other


@pytest.mark.parametrize(
    ("app", "env"), [("shop;", "pre"), ("shop", "pre\nserver"), ("shop", "{{x}}"), ("a b", "pre")]
)
def test_names_that_could_inject_are_rejected(app: str, env: str) -> None:
    with pytest.raises(ConfigError):
        instance_key(app, env, "127.0.0.1", 80)
