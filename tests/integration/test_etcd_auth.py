"""etcd answers only Shipline: anonymous clients (gRPC, etcdctl, the HTTP gateway, a job container on the
host network) are refused; Shipline's credentials work; an etcd without authentication gets it at the next
``up``; an idle client keeps its token; a wrong password is reported, never shown.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aetcd
import docker
import httpx
import pytest
from aetcd.exceptions import ClientError
from pydantic import SecretStr

from shipline.config import Settings
from shipline.docker import docker_client, run_in_image
from shipline.errors import ComponentStartError, ConfigError
from shipline.etcd_client import EtcdCredentials, connect, read_credentials
from shipline.stack.components import Etcd
from shipline.stack.etcd_auth import ROOT, SHIPLINE, enable_authentication, ensure_credentials
from shipline.stack.lifecycle import up
from tests.images import busybox_web_image, free_ports
from tests.waiting import eventually


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _shipline(settings: Settings) -> EtcdCredentials:
    found = read_credentials(settings.etcd_credentials_path)
    assert found is not None, "shipline up writes the credentials"
    return found


async def _anonymous_put(settings: Settings, key: str) -> str:
    async with aetcd.Client(host=settings.host, port=settings.etcd_port) as client:
        with pytest.raises(ClientError) as refused:
            await client.put(key.encode(), b"127.0.0.1:1")
        with pytest.raises(ClientError):
            await client.get(key.encode())
    return str(refused.value)


async def _value(settings: Settings, key: str) -> bytes | None:
    async with connect(settings.etcd_url) as client:
        found = await client.get(key.encode())
    return found.value if found is not None else None


def test_the_credentials_are_files_of_mode_0600(settings: Settings) -> None:
    for path in (settings.etcd_credentials_path, settings.etcd_root_credentials_path):
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert settings.etcd_credentials_path.parent.stat().st_mode & 0o077 == 0
    root = read_credentials(settings.etcd_root_credentials_path)
    assert root is not None and root.user == ROOT and _shipline(settings).user == SHIPLINE


async def test_a_client_without_credentials_can_neither_write_nor_read(settings: Settings, app: str) -> None:
    key = f"/{app}_PRE/127.0.0.1-1"
    assert "user name is empty" in await _anonymous_put(settings, key)
    assert await _value(settings, key) is None


async def test_shipline_credentials_write_and_read(settings: Settings, app: str) -> None:
    key = f"/{app}_PRE/127.0.0.1-2"
    async with connect(settings.etcd_url) as client:
        await client.put(key.encode(), b"127.0.0.1:2")
        assert (await client.get(key.encode())).value == b"127.0.0.1:2"
        await client.delete(key.encode())


def test_etcdctl_needs_the_credentials_file(settings: Settings, app: str) -> None:
    etcdctl = shutil.which("etcdctl")
    assert etcdctl is not None, "etcdctl comes with etcd (make install)"
    key, endpoint = f"/shipline/test/{app}", f"--endpoints={settings.etcd_url}"
    bare = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    refused = subprocess.run([etcdctl, endpoint, "put", key, "x"], env=bare, capture_output=True, text=True)
    assert refused.returncode != 0 and "user name is empty" in refused.stderr
    # What the README tells an operator: source the file, whose one line is etcdctl's own variable.
    sourced = f'set -a; . "{settings.etcd_credentials_path}"; set +a; "{etcdctl}" {endpoint}'
    script = f"{sourced} put {key} x && {sourced} get --print-value-only {key} && {sourced} del {key}"
    done = subprocess.run(
        ["sh", "-c", script],
        env=bare,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["OK", "x", "1"]


def test_the_http_gateway_refuses_a_put_without_a_token(settings: Settings, app: str) -> None:
    key = f"/{app}_PROD/127.0.0.1-3"
    body = {"key": _b64(key), "value": _b64("127.0.0.1:3")}
    with httpx.Client(base_url=settings.etcd_url, trust_env=False) as gateway:
        refused = gateway.post("/v3/kv/put", json=body)
        assert refused.status_code != 200 and "user name is empty" in refused.text
        login = {"name": SHIPLINE, "password": "not-the-password"}
        assert "authentication failed" in gateway.post("/v3/auth/authenticate", json=login).text
        assert "user name is empty" in gateway.post("/v3/auth/user/add", json=login).text
        assert "user name is empty" in gateway.post("/v3/auth/disable", json={}).text
    assert asyncio.run(_value(settings, key)) is None


def test_a_job_container_on_the_host_network_cannot_reroute_an_app(
    settings: Settings, app: str, tmp_path: Path
) -> None:
    client: docker.DockerClient = docker_client(settings.docker_url)
    repository = f"{settings.registry_address}/apps/etcdauthtest"
    image = f"{repository}@{busybox_web_image(client, repository, 'v1', {'healthz': 'ok'})}"
    key = f"/{app}_PROD/127.0.0.1-4"
    body = f'{{"key":"{_b64(key)}","value":"{_b64("127.0.0.1:4")}"}}'
    done = run_in_image(
        client,
        image=image,
        # stderr into stdout: Docker does not keep the order of lines across the two
        command=f"wget -q -O - --post-data '{body}' {settings.etcd_url}/v3/kv/put 2>&1 && echo written "
        "|| echo refused",
        workspace=tmp_path,
        mounts=[],
        log=print,
        timeout=60,
        network="host",  # the widest an operator may allow a job: it reaches the port
    )
    assert done.tail[-1] == "refused", done
    assert any("400 Bad Request" in line for line in done.tail), done  # etcd's answer, not a lost connection
    assert asyncio.run(_value(settings, key)) is None


async def test_a_wrong_password_is_reported_without_showing_it(settings: Settings) -> None:
    wrong = EtcdCredentials(user=SHIPLINE, password=SecretStr("wrong-secret-value"))
    with pytest.raises(ConfigError) as refused:
        async with connect(settings.etcd_url, credentials=wrong):
            pass
    assert "the password of etcd user 'shipline' is wrong" in refused.value.message
    assert "wrong-secret-value" not in f"{refused.value.message} {refused.value.hint}"


async def test_no_credentials_file_is_reported_naming_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "etcd.env"
    monkeypatch.setenv("SHIPLINE_ETCD_CREDENTIALS_FILE", str(missing))
    with pytest.raises(ConfigError) as refused:
        async with connect(settings.etcd_url) as client:
            await client.get(b"/shipline/apps")
    assert f"Shipline has no etcd credentials: {missing} does not exist" in refused.value.message


@pytest.fixture
def bare_etcd(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """An etcd of its own without authentication (started as an older ``up`` did); ``request.param``: extra
    arguments."""
    etcd, peer = free_ports(2)
    private = Settings(home=tmp_path / "home", etcd_port=etcd, etcd_peer_port=peer)
    component = Etcd(private)
    private.log_dir.mkdir(parents=True)
    with component.log.open("wb") as log:
        process = subprocess.Popen(
            [*component.command(), *getattr(request, "param", [])], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        eventually(component.probe, timeout=30, what="the private etcd to answer")
        yield private
    finally:
        process.terminate()
        process.wait(timeout=20)


async def test_an_etcd_without_authentication_gets_it_at_the_next_up(bare_etcd: Settings) -> None:
    async with aetcd.Client(host=bare_etcd.host, port=bare_etcd.etcd_port) as anonymous:
        await anonymous.put(b"/shipline/apps/kept", b"from before")  # anyone may, today
    # Shipline's processes still reach it meanwhile: credentials an etcd has no use for are not an error.
    unused = EtcdCredentials(user=SHIPLINE, password=SecretStr("before-up"))
    async with connect(bare_etcd.etcd_url, credentials=unused) as client:
        assert (await client.get(b"/shipline/apps/kept")).value == b"from before"
    up(bare_etcd, only={"etcd"}, report=lambda _: None)
    shipline = _shipline(bare_etcd)
    async with connect(bare_etcd.etcd_url, credentials=shipline) as held:  # as a daemon holds its client
        up(bare_etcd, only={"etcd"}, report=lambda _: None)  # again: nothing to change, nothing fails
        await held.put(b"/shipline/apps/held", b"token still good")  # the second up cut no one off
    assert "user name is empty" in await _anonymous_put(bare_etcd, "/shipline/apps/other")
    async with connect(bare_etcd.etcd_url, credentials=shipline) as client:
        assert (await client.get(b"/shipline/apps/kept")).value == b"from before"
    # A lost or edited root file is not papered over: up names the problem and changes nothing.
    bare_etcd.etcd_root_credentials_path.write_text("ETCDCTL_USER=root:not-the-one\n")
    with pytest.raises(ComponentStartError, match="refuses the root password"):
        up(bare_etcd, only={"etcd"}, report=lambda _: None)
    async with connect(bare_etcd.etcd_url, credentials=shipline) as client:
        assert (await client.get(b"/shipline/apps/kept")).value == b"from before"


@pytest.mark.parametrize("bare_etcd", [["--auth-token-ttl=2"]], indirect=True)
async def test_an_idle_client_keeps_its_token(bare_etcd: Settings) -> None:
    root = ensure_credentials(bare_etcd.etcd_root_credentials_path, ROOT)
    shipline = ensure_credentials(bare_etcd.etcd_credentials_path, SHIPLINE)
    enable_authentication(bare_etcd.etcd_url, root=root, shipline=shipline)
    url = bare_etcd.etcd_url
    async with (
        connect(url, credentials=shipline, token_refresh_seconds=0.5) as kept,
        connect(url, credentials=shipline, token_refresh_seconds=3600) as idle,
    ):
        kept_token, idle_token = kept.metadata, idle.metadata
        await asyncio.sleep(5)  # more than twice the tokens' time to live
        await kept.put(b"/shipline/idle", b"still in")
        assert kept.metadata == kept_token  # the keeper's reads kept the token alive
        # The idle client's token expired: etcd answers "invalid auth token", the client authenticates
        # again by itself and repeats the put.
        await idle.put(b"/shipline/renewed", b"in again")
        assert idle.metadata != idle_token
    async with connect(url, credentials=shipline) as client:
        assert (await client.get(b"/shipline/idle")).value == b"still in"
        assert (await client.get(b"/shipline/renewed")).value == b"in again"
