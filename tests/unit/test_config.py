from pathlib import Path

import pytest

from shipline.config import POOLS, Settings, load_settings
from shipline.errors import ConfigError


def test_defaults_are_loopback_and_documented_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SHIPLINE_HOME", "SHIPLINE_ETCD_PORT", "SHIPLINE_HOST"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.home == Path("~/.shipline").expanduser().resolve()
    assert settings.prefect_api_url == "http://127.0.0.1:4200/api"
    assert settings.etcd_url == "http://127.0.0.1:2379"
    assert settings.registry_address == "127.0.0.1:5000"
    assert settings.nginx_url == "http://127.0.0.1:8080"
    assert POOLS == ("ci", "pre", "prod")


def test_home_override_moves_every_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHIPLINE_HOME", str(tmp_path / "home"))
    settings = load_settings()
    for path in (settings.run_dir, settings.log_dir, settings.nginx_conf_dir, settings.prefect_home):
        assert path.is_relative_to(tmp_path / "home")
    env = settings.prefect_environment()
    assert env["PREFECT_HOME"] == str(tmp_path / "home" / "prefect")
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("SHIPLINE_ETCD_PORT", "99999", "SHIPLINE_ETCD_PORT='99999'"),
        ("SHIPLINE_NGINX_PORT", "http", "SHIPLINE_NGINX_PORT='http'"),
        ("SHIPLINE_HOST", "192.0.2.1", "not a loopback address"),
        ("SHIPLINE_HOST", "localhost; rm -rf /", "not an IP address"),
        ("SHIPLINE_DOCKER_STORAGE_DRIVER", "zfs", "not one of auto, overlay2, vfs"),
        ("SHIPLINE_DEBIAN_MIRROR", "", "'' is not an http:// or https:// URL"),
        ("SHIPLINE_DEBIAN_MIRROR", "ftp://ftp.debian.org/debian", "is not an http:// or https:// URL"),
        (
            "SHIPLINE_DEBIAN_SECURITY_MIRROR",
            "http://deb.debian.org/debian-security\nURIs: http://evil.example",
            "SHIPLINE_DEBIAN_SECURITY_MIRROR=",
        ),
        ("SHIPLINE_DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/x [trusted=yes]", "not an http://"),
    ],
)
def test_invalid_override_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert expected in caught.value.message
    assert caught.value.hint


def test_two_components_on_one_port_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPLINE_ETCD_PORT", "4200")
    with pytest.raises(ConfigError, match="etcd_port and prefect_port are both 4200"):
        load_settings()


def test_settings_are_immutable() -> None:
    settings = Settings()
    with pytest.raises(ValueError):
        settings.etcd_port = 1  # type: ignore[misc]  # assigning is the point: it must fail


def test_the_security_suite_may_be_turned_off_but_is_on_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHIPLINE_DEBIAN_SECURITY_MIRROR", raising=False)
    assert load_settings().debian_security_mirror == "http://deb.debian.org/debian-security"
    monkeypatch.setenv("SHIPLINE_DEBIAN_SECURITY_MIRROR", "")
    assert load_settings().debian_security_mirror == ""
    monkeypatch.setenv("SHIPLINE_DEBIAN_SECURITY_MIRROR", "https://security.debian.org/debian-security/")
    assert load_settings().debian_security_mirror == "https://security.debian.org/debian-security"


def test_every_prefect_client_retries_a_500(monkeypatch: pytest.MonkeyPatch) -> None:
    # While PostgreSQL restarts, Prefect's server answers 500 to what cannot connect: a client that gave up
    # at once left its run Pending or Running for ever (tests/integration/test_prefect_postgres.py).
    from prefect.settings import Settings as PrefectSettings

    for key, value in load_settings().prefect_environment(credentials=False).items():
        monkeypatch.setenv(key, value)
    assert PrefectSettings().client.retry_extra_codes == {500}
