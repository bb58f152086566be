"""etcd as a cluster and over TLS: the settings, the members' commands, the certificates the stack makes."""

import ssl
import subprocess
from pathlib import Path

import pytest

from shipline.config import Settings, load_settings
from shipline.errors import ConfigError
from shipline.etcd_client import _target, parse_endpoints
from shipline.stack.components import Etcd, etcd_members, infrastructure
from shipline.stack.etcd_tls import ensure_etcd_tls
from shipline.stack.units import render_unit


def test_one_plain_member_by_default(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, etcd_port=2379, etcd_peer_port=2380)
    (member,) = etcd_members(settings)
    assert (member.name, member.url, settings.etcd_url) == (
        "etcd",
        "http://127.0.0.1:2379",
        "http://127.0.0.1:2379",
    )
    assert settings.etcd_tls_files is None and settings.etcd_environment() == {}
    command = member.command()
    assert f"--data-dir={tmp_path / 'etcd'}" in command
    assert "--initial-cluster=shipline=http://127.0.0.1:2380" in command
    assert not any(flag.startswith(("--cert-file", "--client-cert-auth", "--election")) for flag in command)


def test_three_members_on_derived_ports_each_knowing_the_others(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, etcd_port=2579, etcd_peer_port=2580, etcd_members=3)
    members = etcd_members(settings)
    assert [m.name for m in members] == ["etcd-1", "etcd-2", "etcd-3"]
    assert [m.port for m in members] == [2579, 2581, 2583]
    assert settings.etcd_url == "http://127.0.0.1:2579,http://127.0.0.1:2581,http://127.0.0.1:2583"
    cluster = (
        "--initial-cluster=shipline-1=http://127.0.0.1:2580,shipline-2=http://127.0.0.1:2582,"
        "shipline-3=http://127.0.0.1:2584"
    )
    for member in members:
        assert cluster in member.command()
        assert "--election-timeout=500" in member.command()  # a leader's death is noticed within 1 s
    second = members[1].command()
    assert "--listen-peer-urls=http://127.0.0.1:2582" in second
    assert "--advertise-client-urls=http://127.0.0.1:2581" in second
    assert len({m.data_dir for m in members}) == 3
    assert [c.name for c in infrastructure(settings)][1:4] == ["etcd-1", "etcd-2", "etcd-3"]
    assert settings.etcd_environment() == {"SHIPLINE_ETCD_MEMBERS": "3"}


def test_tls_members_serve_and_want_certificates_of_the_stack_ca(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, etcd_port=2379, etcd_peer_port=2380, etcd_members=3, etcd_tls=True)
    command = Etcd(settings, member=2).command()
    tls = settings.etcd_tls_dir
    for flag in (
        f"--cert-file={tls / 'member.crt'}",
        f"--key-file={tls / 'member.key'}",
        f"--trusted-ca-file={tls / 'ca.crt'}",
        "--client-cert-auth",
        f"--peer-cert-file={tls / 'member.crt'}",
        f"--peer-trusted-ca-file={tls / 'ca.crt'}",
        "--peer-client-cert-auth",
        "--listen-client-urls=https://127.0.0.1:2383",
        "--listen-peer-urls=https://127.0.0.1:2384",
    ):
        assert flag in command
    files = settings.etcd_tls_files
    assert files is not None and (files.cert, files.key) == (tls / "client.crt", tls / "client.key")


def test_real_certificates_serve_members_and_clients_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in (("CA_FILE", "ca.pem"), ("CERT_FILE", "host.pem"), ("KEY_FILE", "host.key")):
        monkeypatch.setenv(f"SHIPLINE_ETCD_{name}", str(tmp_path / value))
    monkeypatch.setenv("SHIPLINE_ETCD_TLS", "true")
    settings = load_settings()
    assert settings.etcd_tls_files == settings.etcd_member_tls_files
    assert settings.etcd_tls_files is not None and settings.etcd_tls_files.cert == tmp_path / "host.pem"
    with pytest.raises(ConfigError, match="does not exist") as caught:
        ensure_etcd_tls(settings)  # the stack never makes real ones: it names the one that is missing
    assert str(tmp_path / "ca.pem") in caught.value.message and caught.value.hint


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"SHIPLINE_ETCD_MEMBERS": "2"}, "2 is not 1, 3, 5 or 7 etcd members"),
        (
            {"SHIPLINE_ETCD_MEMBERS": "3", "SHIPLINE_ETCD_PORT": "4196", "SHIPLINE_PREFECT_PORT": "4200"},
            "are both 4200",
        ),
        (
            {"SHIPLINE_ETCD_MEMBERS": "7", "SHIPLINE_ETCD_PEER_PORT": "65530"},
            "would be 65536, not a TCP port",
        ),
        ({"SHIPLINE_ETCD_CA_FILE": "/nowhere/ca.pem"}, "go together"),
    ],
)
def test_invalid_cluster_settings_are_refused_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], expected: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=expected) as caught:
        load_settings()
    assert caught.value.hint


def test_clients_get_one_channel_target_for_every_member() -> None:
    endpoints = parse_endpoints("https://127.0.0.1:2579, https://localhost:2581,https://127.0.0.1:2583")
    assert _target(endpoints) == "ipv4:127.0.0.1:2579,127.0.0.1:2581,127.0.0.1:2583"
    assert _target(parse_endpoints("http://127.0.0.1:2379")) == "127.0.0.1:2379"  # one member: as ever
    with pytest.raises(ConfigError, match="mix http:// and https://"):
        parse_endpoints("http://127.0.0.1:2379,https://127.0.0.1:2381")
    with pytest.raises(ConfigError, match="not an http:// or https:// URL"):
        parse_endpoints("127.0.0.1:2379")


@pytest.mark.parametrize("use_openssl", [False, True], ids=["cryptography", "openssl"])
def test_the_stack_makes_a_ca_and_certificates_that_verify(tmp_path: Path, use_openssl: bool) -> None:
    settings = Settings(home=tmp_path / "home", etcd_tls=True)
    member = ensure_etcd_tls(settings, use_openssl=use_openssl)
    client = settings.etcd_tls_files
    assert member is not None and client is not None
    for key in (member.key, client.key):
        assert key.stat().st_mode & 0o777 == 0o600
    assert settings.etcd_tls_dir.stat().st_mode & 0o777 == 0o700
    for certificate, purpose in (
        (member.cert, "sslserver"),
        (member.cert, "sslclient"),
        (client.cert, "sslclient"),
    ):
        checked = subprocess.run(
            ["openssl", "verify", "-CAfile", str(member.ca), "-purpose", purpose, str(certificate)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert checked.returncode == 0, checked.stderr
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-in", str(member.cert)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "DNS:localhost" in text and "IP Address:127.0.0.1" in text
    # No common name is an etcd user (a certificate alone never authenticates as root or Shipline), and the
    # clients' has none: etcd's HTTP gateway refuses a client certificate with one.
    subjects = [
        subprocess.run(
            ["openssl", "x509", "-noout", "-subject", "-in", str(certificate)], capture_output=True, text=True
        ).stdout
        for certificate in (member.cert, client.cert)
    ]
    assert "CN" in subjects[0] and "root" not in subjects[0] and "= shipline\n" not in subjects[0]
    assert "CN" not in subjects[1] and "O" in subjects[1]
    context = ssl.create_default_context(cafile=str(client.ca))
    context.load_cert_chain(str(client.cert), str(client.key))  # the pair belongs together
    before = member.cert.read_bytes()
    ensure_etcd_tls(settings, use_openssl=use_openssl)
    assert member.cert.read_bytes() == before, "made once: a second up keeps them"


def test_units_and_etcdctl_reach_every_member_with_the_tls_files(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, etcd_port=2379, etcd_peer_port=2380, etcd_members=3, etcd_tls=True)
    tls = settings.etcd_tls_dir
    assert settings.etcdctl_arguments() == [
        "--endpoints=https://127.0.0.1:2379,https://127.0.0.1:2381,https://127.0.0.1:2383",
        f"--cacert={tls / 'ca.crt'}",
        f"--cert={tls / 'client.crt'}",
        f"--key={tls / 'client.key'}",
    ]
    unit = render_unit("shipline-discover", ["shipline", "discover"], settings)
    for line in (
        "Environment=SHIPLINE_ETCD_MEMBERS=3\n",
        "Environment=SHIPLINE_ETCD_TLS=true\n",
        f"Environment=SHIPLINE_ETCD_CA_FILE={tls / 'ca.crt'}\n",
        f"Environment=SHIPLINE_ETCD_KEY_FILE={tls / 'client.key'}\n",
    ):
        assert line in unit
    plain = render_unit("shipline-discover", ["shipline", "discover"], Settings(home=tmp_path))
    assert "SHIPLINE_ETCD_MEMBERS" not in plain and "SHIPLINE_ETCD_TLS" not in plain
    assert Settings(home=tmp_path, etcd_port=2379).etcdctl_arguments() == [
        "--endpoints=http://127.0.0.1:2379"
    ]
