"""The stack's registry answers only Shipline: without its login nothing is read, pushed or deleted.

On the session's stack (its registry started by ``shipline up`` with the login it generated), and from a
job container on the host network, where a build command runs: it reaches the port but can do nothing.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import yaml
from docker.errors import APIError

from shipline.build.registry import DOCKER_MANIFEST, Registry, canonical_json, sha256_digest
from shipline.config import Settings
from shipline.docker import docker_client, run_in_image
from shipline.stack.components import Registry as RegistryComponent
from tests.images import busybox_web_image


@pytest.fixture(scope="module")
def registry(settings: Settings) -> Registry:
    return Registry.of_stack(settings)


def anonymous(settings: Settings) -> httpx.Client:
    return httpx.Client(base_url=f"http://{settings.registry_address}", trust_env=False, timeout=10)


def push_tiny_image(registry: Registry, repository: str, tag: str, layer: bytes) -> str:
    """Push a one-layer image through the API client (the login it holds); return its digest."""
    config = canonical_json({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}})
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": len(config),
                "digest": sha256_digest(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(layer),
                    "digest": sha256_digest(layer),
                }
            ],
        }
    )
    with registry.api() as api:
        api.upload_blob(repository, sha256_digest(config), config)
        api.upload_blob(repository, sha256_digest(layer), layer)
        return api.put_manifest(repository, tag, manifest, DOCKER_MANIFEST)


def test_the_login_is_generated_once_and_kept_private(settings: Settings, registry: Registry) -> None:
    directory = settings.registry_credentials_file.parent
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for path in (settings.registry_credentials_file, settings.registry_htpasswd_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    login = registry.basic_auth()
    assert login is not None and len(login[1]) >= 32
    assert login[1] not in settings.registry_htpasswd_file.read_text()  # only its bcrypt hash
    config = yaml_config(settings)
    assert config["auth"]["htpasswd"]["path"] == str(settings.registry_htpasswd_file)


def yaml_config(settings: Settings) -> dict[str, Any]:
    return dict(yaml.safe_load(RegistryComponent(settings).config_path.read_text()))


def test_without_the_login_reads_pushes_and_deletes_are_refused(
    settings: Settings, registry: Registry
) -> None:
    digest = push_tiny_image(registry, "apps/authtest", "v1", b"kept layer")
    with anonymous(settings) as client:
        assert client.get("/v2/_catalog").status_code == 401
        assert client.get("/v2/apps/authtest/manifests/v1").status_code == 401
        assert client.post("/v2/apps/authtest/blobs/uploads/").status_code == 401
        overwrite = client.put(
            "/v2/apps/authtest/manifests/v1", content=b"{}", headers={"Content-Type": DOCKER_MANIFEST}
        )
        assert overwrite.status_code == 401
        assert client.delete(f"/v2/apps/authtest/manifests/{digest}").status_code == 401
        wrong = client.get("/v2/_catalog", auth=("shipline", "not-the-password"))
        assert wrong.status_code == 401
    # Nothing changed; with the login the same calls work.
    assert registry.manifest_digest(f"{settings.registry_address}/apps/authtest", "v1") == digest
    with registry.api() as api:
        assert "apps/authtest" in api.repositories()
        assert api.delete_manifest("apps/authtest", digest) is True
    assert registry.manifest_digest(f"{settings.registry_address}/apps/authtest", "v1") is None


def test_the_engine_pushes_and_pulls_only_with_the_login(settings: Settings, registry: Registry) -> None:
    repository = f"{settings.registry_address}/apps/authengine"
    digest = busybox_web_image(docker_client(settings.docker_url), repository, "v1", {"healthz": "ok"})
    client = docker.DockerClient(base_url=settings.docker_url)  # holds no login
    events = list(client.api.push(repository, tag="v1", stream=True, decode=True))
    assert any("error" in event for event in events), events
    client.images.remove(f"{repository}:v1", force=True)
    with pytest.raises(APIError):
        client.images.pull(f"{repository}@{digest}")
    registry.log_in(client)
    assert client.images.pull(f"{repository}@{digest}").id


def test_docker_config_holds_the_login_for_compose(tmp_path: Path, registry: Registry) -> None:
    directory = registry.docker_config(tmp_path / "docker-config")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    path = directory / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    auths = json.loads(path.read_text())["auths"]
    assert list(auths) == [registry.address]


def test_a_job_container_reaches_the_registry_but_can_do_nothing_there(
    settings: Settings, registry: Registry, tmp_path: Path
) -> None:
    client = docker_client(settings.docker_url)
    repository = f"{settings.registry_address}/apps/authjob"
    image = f"{repository}@{busybox_web_image(client, repository, 'v1', {'healthz': 'ok'})}"
    base = f"{settings.registry_address}/shipline/middleware/authjob"
    kept = push_tiny_image(registry, "shipline/middleware/authjob", "3.11", b"the real middleware")
    host, port = settings.host, settings.registry_port

    def raw(method: str, path: str, body: str = "") -> str:
        request = (
            f"{method} {path} HTTP/1.0\\r\\nHost: {host}:{port}\\r\\n"
            f"Content-Type: {DOCKER_MANIFEST}\\r\\nContent-Length: {len(body)}\\r\\n\\r\\n{body}"
        )
        return f"printf '{request}' | busybox nc {host} {port} | busybox head -n 1"

    url = f"http://{host}:{port}"
    done = run_in_image(
        client,
        image=image,
        command="; ".join(
            [
                f"wget -q -O- {url}/v2/_catalog 2>&1",
                f"wget -q -O- --post-data=x {url}/v2/shipline/middleware/authjob/blobs/uploads/ 2>&1",
                raw("PUT", "/v2/shipline/middleware/authjob/manifests/3.11", "{}"),
                raw("DELETE", f"/v2/shipline/middleware/authjob/manifests/{kept}"),
            ]
        ),
        workspace=tmp_path,
        mounts=[],
        network="host",  # the widest an operator may allow a job: it reaches the port
        log=print,
        timeout=60,
    )
    catalog, upload, overwrite, delete = done.tail[-4:]
    assert "401" in catalog and "401" in upload, done.tail
    assert " 401 " in overwrite and " 401 " in delete, done.tail
    assert registry.manifest_digest(base, "3.11") == kept  # the tag every later build reuses is intact
