"""The Docker registry (Distribution API v2) that holds base and app images, and pushes to it.

``Registry`` is where images go: its address (as it appears in image names), whether it speaks plain HTTP,
and its credentials. The ``shipline-registry`` block holds it; tasks read the block at run time, so an
operator who edits the block in the Prefect UI moves the next build's images. ``RegistryAPI`` speaks the
registry's HTTP API: it reads what the registry holds (catalog, tags, manifests, image configs), deletes
manifests by digest (housekeeping), and pushes app images blob by blob (``shipline.build.app_image``
assembles them; base layers are mounted across repositories, nothing the registry has is sent again).

Names: ``{registry}/shipline/os/{name}:{version}``, ``{registry}/shipline/middleware/{name}:{version}``,
``{registry}/apps/{app}:{sha}``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import docker
import httpx
from docker.errors import APIError, DockerException
from pydantic import BaseModel, SecretStr

from shipline.config import Settings
from shipline.errors import PushError, RegistryError, ServiceUnavailableError
from shipline.spec import LayerRef

Log = Callable[[str], None]
_INDEX_TYPES = (
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)
_MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        *_INDEX_TYPES,
    ]
)
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
_CHUNK = 1 << 20
_UPLOAD_TIMEOUT = 600.0
_PAGE = 1000
"""Entries asked for per page of the catalog and of a tag list (the registry may answer fewer)."""


class Registry(BaseModel):
    """A registry: ``address`` is host:port as it appears in image names."""

    address: str
    username: str | None = None
    password: SecretStr | None = None
    insecure: bool = True
    """Plain HTTP: loopback registries only."""

    @classmethod
    def of_stack(cls, settings: Settings) -> Registry:
        """The local stack's registry, with the login ``shipline up`` generated (none before it did)."""
        login = settings.registry_login()
        return cls(
            address=settings.registry_address,
            username=login[0] if login else None,
            password=login[1] if login else None,
        )

    def os_repository(self, layer: LayerRef) -> str:
        return f"{self.address}/shipline/os/{layer.name}"

    def middleware_repository(self, layer: LayerRef) -> str:
        return f"{self.address}/shipline/middleware/{layer.name}"

    def app_repository(self, app: str) -> str:
        return f"{self.address}/apps/{app}"

    def log_in(self, client: docker.DockerClient) -> None:
        """Give ``client`` this registry's credentials for its pushes, pulls and builds (none: no-op).

        Raises:
            PushError: if the registry refuses them.
        """
        if self.username is None:
            return
        password = self.password.get_secret_value() if self.password else ""
        try:
            client.login(username=self.username, password=password, registry=self.address)
        except (APIError, DockerException) as exc:
            raise PushError(
                f"registry {self.address} refuses the credentials of {self.username}: {exc}",
                hint="fix username and password in the shipline-registry block",
            ) from exc

    @property
    def url(self) -> str:
        """Base URL of its API."""
        return f"{'http' if self.insecure else 'https'}://{self.address}"

    def docker_config(self, directory: Path) -> Path:
        """Write a Docker client configuration that holds this registry's login; return its directory.

        For processes that reach the registry through the engine on their own (``docker compose up``
        pulls an app image by digest): give them ``DOCKER_CONFIG`` set to the returned directory. The
        directory is the process user's only (0700), its ``config.json`` 0600, written before it is
        readable; without credentials it holds no login.
        """
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        auths: dict[str, dict[str, str]] = {}
        if (login := self.basic_auth()) is not None:
            auths[self.address] = {"auth": base64.b64encode(":".join(login).encode()).decode()}
        descriptor, tmp = tempfile.mkstemp(dir=directory, prefix=".config.", suffix=".tmp")  # 0600
        with os.fdopen(descriptor, "w") as handle:
            json.dump({"auths": auths}, handle)
        os.replace(tmp, directory / "config.json")
        return directory

    def basic_auth(self) -> tuple[str, str] | None:
        """Its credentials for HTTP basic authentication, unwrapped here at the call site (none: None)."""
        if self.username is None:
            return None
        return (self.username, self.password.get_secret_value() if self.password else "")

    def api(self, *, transport: httpx.BaseTransport | None = None) -> RegistryAPI:
        """A client of its Distribution API; ``transport`` replaces the network (a fake registry in tests)."""
        return RegistryAPI(self, transport=transport)

    def manifest_digest(self, repository: str, tag: str) -> str | None:
        """The digest of ``repository:tag`` in this registry, or None if it is not there.

        Raises:
            PushError: if the registry does not answer (transient).
        """
        name = repository.removeprefix(f"{self.address}/")
        try:
            response = httpx.head(
                f"{self.url}/v2/{name}/manifests/{tag}",
                headers={"Accept": _MANIFEST_TYPES},
                auth=self.basic_auth(),
                timeout=10,
                trust_env=False,
            )
        except httpx.HTTPError as exc:
            raise PushError(f"registry {self.address} does not answer: {exc}", transient=True) from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise PushError(
                f"registry {self.address} answered {response.status_code} for {name}:{tag}", transient=True
            )
        return response.headers.get("Docker-Content-Digest")


class BlobRef(BaseModel):
    """A blob a manifest references (the image config or a layer), and its size in bytes."""

    digest: str
    size: int


class ImageManifest(BaseModel):
    """One manifest of a repository, as the registry serves it."""

    repository: str
    """Its name in the registry (``apps/shop``), without the registry's address."""
    digest: str
    media_type: str
    config: BlobRef | None = None
    layers: list[BlobRef] = []
    manifests: list[str] = []
    """The digests an image index (a multi-platform list) points to; empty for an image."""

    @property
    def is_index(self) -> bool:
        return self.media_type in _INDEX_TYPES

    @property
    def blobs(self) -> list[BlobRef]:
        """The image config and the layers: what the registry's blob collection frees once nothing else
        references them."""
        return [*([self.config] if self.config else []), *self.layers]


class RegistryAPI:
    """Reads what a registry holds and deletes manifests, through its Distribution API (v2).

    Args:
        registry: Where, and the credentials.
        transport: Replaces the network, e.g. ``httpx.MockTransport`` with a fake registry.

    Every call raises ``ServiceUnavailableError`` (transient) when the registry does not answer, and
    ``RegistryError`` with the status and body of an answer it did not expect.
    """

    def __init__(self, registry: Registry, *, transport: httpx.BaseTransport | None = None) -> None:
        self.registry = registry
        self._http = httpx.Client(
            base_url=registry.url,
            auth=registry.basic_auth(),
            transport=transport,
            timeout=10,
            trust_env=False,
            follow_redirects=True,  # blobs may be served from elsewhere (a storage backend's URL)
        )

    def __enter__(self) -> RegistryAPI:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise ServiceUnavailableError(
                f"registry {self.registry.address} does not answer: {exc}",
                hint="shipline status shows the stack's registry; check the shipline-registry block",
                transient=True,
            ) from exc

    def _refused(self, response: httpx.Response, what: str) -> RegistryError:
        body = response.text.strip().replace("\n", " ")[:300]
        return RegistryError(
            f"registry {self.registry.address} answered {response.status_code} to {what}: {body}",
            transient=response.status_code >= 500,
        )

    def _pages(self, url: str, key: str, what: str) -> list[str]:
        found: list[str] = []
        next_url: str | None = f"{url}?n={_PAGE}"
        while next_url:
            response = self._request("GET", next_url)
            if response.status_code == 404:
                return found
            if response.status_code != 200:
                raise self._refused(response, what)
            found += response.json().get(key) or []  # a repository without tags lists null
            next_url = response.links.get("next", {}).get("url")
        return found

    def repositories(self) -> list[str]:
        """Every repository in the catalog (``apps/shop``, ``shipline/os/debian`` …), as the registry
        orders them."""
        return self._pages("/v2/_catalog", "repositories", "the catalog")

    def tags(self, repository: str) -> list[str]:
        """The tags of ``repository`` (none when it has no tag left or does not exist)."""
        return self._pages(f"/v2/{repository}/tags/list", "tags", f"the tags of {repository}")

    def manifest(self, repository: str, reference: str) -> ImageManifest | None:
        """The manifest ``reference`` (a tag or a digest) points to, or None if there is none (any more)."""
        response = self._request(
            "GET", f"/v2/{repository}/manifests/{reference}", headers={"Accept": _MANIFEST_TYPES}
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._refused(response, f"the manifest {repository}:{reference}")
        document = response.json()
        digest = response.headers.get("Docker-Content-Digest") or (
            "sha256:" + hashlib.sha256(response.content).hexdigest()
        )
        media_type = document.get("mediaType") or response.headers.get("Content-Type", "")
        config = document.get("config")
        return ImageManifest(
            repository=repository,
            digest=digest,
            media_type=media_type,
            config=BlobRef(digest=config["digest"], size=config.get("size", 0)) if config else None,
            layers=[BlobRef(digest=x["digest"], size=x.get("size", 0)) for x in document.get("layers", [])],
            manifests=[x["digest"] for x in document.get("manifests", [])],
        )

    def image_created(self, manifest: ImageManifest) -> datetime | None:
        """When the image was made, from its config (``created``), or None when it does not say.

        An image is pushed right after it is made, so this orders a repository's images by push time
        (the Distribution API keeps no push time of its own).
        """
        if manifest.config is None:
            return None
        response = self._request("GET", f"/v2/{manifest.repository}/blobs/{manifest.config.digest}")
        if response.status_code != 200:
            return None
        try:
            created = json.loads(response.content).get("created")
            return datetime.fromisoformat(created) if isinstance(created, str) else None
        except ValueError:
            return None

    def delete_manifest(self, repository: str, digest: str) -> bool:
        """Delete the manifest ``digest`` of ``repository`` and the tags that point to it.

        Returns:
            True if it was deleted, False if it was not there (any more).

        Raises:
            RegistryError: if the registry refuses (deletes not enabled: ``storage.delete.enabled``).
        """
        response = self._request("DELETE", f"/v2/{repository}/manifests/{digest}")
        if response.status_code in (200, 202):
            return True
        if response.status_code == 404:
            return False
        error = self._refused(response, f"deleting {repository}@{digest}")
        if response.status_code == 405:
            error.hint = "enable deletes in the registry's configuration (storage: delete: enabled: true)"
        raise error

    # -- pushing an assembled image --------------------------------------------------------------------

    def _name(self, repository: str) -> str:
        """The repository's name in the registry: ``apps/x`` of ``127.0.0.1:5000/apps/x`` or of itself."""
        return repository.removeprefix(f"{self.registry.address}/")

    def manifest_document(self, repository: str, reference: str) -> tuple[dict[str, Any], str]:
        """The manifest of one image (a tag or digest) as a document, and its digest.

        Raises:
            PushError: if it is missing, or is an index (multi-platform), which Shipline does not build on.
        """
        name = self._name(repository)
        response = self._request(
            "GET", f"/v2/{name}/manifests/{reference}", headers={"Accept": _MANIFEST_TYPES}
        )
        if response.status_code == 404:
            raise PushError(f"{name}@{reference} is not in the registry", hint="was the base layer pushed?")
        if response.status_code != 200:
            raise self._refused(response, f"the manifest {name}:{reference}")
        document = response.json()
        if document.get("mediaType") in _INDEX_TYPES or "manifests" in document:
            raise PushError(f"{name}@{reference} is a multi-platform index, not one image")
        return document, response.headers.get("Docker-Content-Digest") or sha256_digest(response.content)

    def blob(self, repository: str, digest: str) -> bytes:
        """A small blob (an image config), checked against its digest."""
        name = self._name(repository)
        response = self._request("GET", f"/v2/{name}/blobs/{digest}")
        if response.status_code != 200:
            raise self._refused(response, f"the blob {name}@{digest}")
        if sha256_digest(response.content) != digest:
            raise RegistryError(f"registry {self.registry.address} served {name}@{digest} with other content")
        return response.content

    def has_blob(self, repository: str, digest: str) -> bool:
        return self._request("HEAD", f"/v2/{self._name(repository)}/blobs/{digest}").status_code == 200

    def mount_blob(self, repository: str, digest: str, source: str) -> bool:
        """Link a blob of ``source`` into ``repository`` without uploading; False if the registry cannot."""
        name = self._name(repository)
        response = self._request(
            "POST", f"/v2/{name}/blobs/uploads/", params={"mount": digest, "from": self._name(source)}
        )
        if response.status_code == 201:
            return True
        if response.status_code == 202 and (location := response.headers.get("Location")):
            self._request("DELETE", location)  # the upload it opened instead
        return False

    def upload_blob(self, repository: str, digest: str, content: bytes | Path) -> None:
        """Upload a blob in one request (streamed from the file when ``content`` is a path)."""
        name = self._name(repository)
        started = self._request("POST", f"/v2/{name}/blobs/uploads/")
        location = started.headers.get("Location")
        if started.status_code != 202 or not location:
            raise self._refused(started, f"an upload to {name}")
        size = content.stat().st_size if isinstance(content, Path) else len(content)
        finished = self._request(
            "PUT",
            # The upload URL keeps its state in the query: add the digest (params= would replace it).
            str(httpx.URL(location).copy_add_param("digest", digest)),
            content=content if isinstance(content, bytes) else _chunks(content),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            timeout=_UPLOAD_TIMEOUT,
        )
        if finished.status_code != 201:
            raise self._refused(finished, f"the upload of {digest} to {name}")

    def copy_blob(self, repository: str, digest: str, source: str, scratch: Path) -> None:
        """Put a blob of ``source`` into ``repository``: mounted if the registry can, else copied through."""
        if self.has_blob(repository, digest) or self.mount_blob(repository, digest, source):
            return
        path = scratch / digest.replace(":", "-")
        url = f"/v2/{self._name(source)}/blobs/{digest}"
        try:
            with self._http.stream("GET", url, timeout=_UPLOAD_TIMEOUT) as response, path.open("wb") as out:
                if response.status_code != 200:
                    raise RegistryError(
                        f"registry {self.registry.address}: {url} answered {response.status_code}"
                    )
                for chunk in response.iter_bytes(_CHUNK):
                    out.write(chunk)
            self.upload_blob(repository, digest, path)
        except httpx.HTTPError as exc:
            raise ServiceUnavailableError(
                f"registry {self.registry.address} does not answer: {exc}", transient=True
            ) from exc
        finally:
            path.unlink(missing_ok=True)

    def put_manifest(self, repository: str, tag: str, manifest: bytes, media_type: str) -> str:
        """Store ``manifest`` as ``repository:tag``; return its digest (checked against the bytes sent)."""
        name = self._name(repository)
        response = self._request(
            "PUT", f"/v2/{name}/manifests/{tag}", content=manifest, headers={"Content-Type": media_type}
        )
        if response.status_code != 201:
            raise self._refused(response, f"the manifest {name}:{tag}")
        digest = sha256_digest(manifest)
        stored = response.headers.get("Docker-Content-Digest", digest)
        if stored != digest:
            raise RegistryError(
                f"registry {self.registry.address} stored {name}:{tag} as {stored}, sent {digest}"
            )
        return digest


def sha256_digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def canonical_json(value: Any) -> bytes:
    """JSON with sorted keys and no spaces: the same value always gives the same bytes (and digest)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            yield chunk


class PushedImage(BaseModel):
    """An image in the registry: where, which tag, which digest."""

    repository: str
    tag: str
    digest: str

    @property
    def by_digest(self) -> str:
        return f"{self.repository}@{self.digest}"


def push_image(client: docker.DockerClient, repository: str, tag: str, log: Log) -> PushedImage:
    """Push ``repository:tag`` and return its digest.

    docker-py reports push errors inside the stream without raising: every event is read, and one
    with ``error`` fails the push.

    Raises:
        PushError: with the registry's message (transient: a retry may succeed).
    """
    digest = None
    try:
        for event in client.api.push(repository, tag=tag, stream=True, decode=True):
            if "error" in event or "errorDetail" in event:
                detail = event.get("errorDetail", {}).get("message") or event.get("error")
                raise PushError(f"push of {repository}:{tag} failed: {detail}", transient=True)
            digest = (event.get("aux") or {}).get("Digest", digest)
            if event.get("status") and "id" not in event:
                log(str(event["status"]))
    except (APIError, DockerException) as exc:
        raise PushError(f"push of {repository}:{tag} failed: {exc}", transient=True) from exc
    if digest is None:
        raise PushError(f"push of {repository}:{tag} reported no digest", transient=True)
    log(f"pushed {repository}:{tag} as {digest}")
    return PushedImage(repository=repository, tag=tag, digest=digest)
