"""The registry's HTTP API (Distribution v2), spoken directly: manifests and blobs, no Docker Engine.

App images are assembled by Shipline itself (``shipline.build.app_image``) and pushed here blob by blob,
the way ko, Jib and crane do; base layers are mounted across repositories instead of copied.
Credentials are sent as HTTP Basic, or exchanged for a bearer token when the registry asks for one
(``WWW-Authenticate: Bearer realm=…``, as GitLab's and Docker Hub's registries do).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from shipline.build.registry import Registry
from shipline.errors import PushError

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_INDEXES = (
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)
_CHUNK = 1 << 20


def sha256_digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


class RegistryAPI:
    """A client of one registry; use as a context manager.

    Every failure is a ``PushError``; a registry that does not answer or answers 5xx is transient.
    """

    def __init__(self, registry: Registry, *, timeout: float = 60.0) -> None:
        self.registry = registry
        scheme = "http" if registry.insecure else "https"
        self._base = f"{scheme}://{registry.address}"
        self._client = httpx.Client(timeout=timeout, trust_env=False, follow_redirects=True)
        self._tokens: dict[str, str] = {}

    def __enter__(self) -> RegistryAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.close()

    def name(self, repository: str) -> str:
        """The repository's name inside this registry (``apps/x`` of ``127.0.0.1:5000/apps/x``)."""
        return repository.removeprefix(f"{self.registry.address}/")

    # -- requests ---------------------------------------------------------------------------------

    def _basic(self) -> tuple[str, str] | None:
        if self.registry.username is None:
            return None
        secret = self.registry.password.get_secret_value() if self.registry.password else ""
        return (self.registry.username, secret)

    def _request(self, method: str, url: str, *, scope: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if token := self._tokens.get(scope):
            headers["Authorization"] = f"Bearer {token}"
        elif basic := self._basic():
            kwargs["auth"] = basic
        try:
            response = self._client.request(method, url, headers=headers, **kwargs)
            challenge = response.headers.get("WWW-Authenticate", "")
            if (
                response.status_code == 401
                and challenge.lower().startswith("bearer")
                and scope not in self._tokens
            ):
                self._tokens[scope] = self._token(challenge, scope)
                headers["Authorization"] = f"Bearer {self._tokens[scope]}"
                kwargs.pop("auth", None)
                response = self._client.request(method, url, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise PushError(
                f"registry {self.registry.address} does not answer: {exc}", transient=True
            ) from exc
        if response.status_code in (401, 403):
            raise PushError(
                f"registry {self.registry.address} refuses {method} {url.removeprefix(self._base)}: "
                f"{response.status_code}",
                hint="check username and password in the shipline-registry block",
            )
        if response.status_code >= 500:
            raise PushError(
                f"registry {self.registry.address} answered {response.status_code} to {method} "
                f"{url.removeprefix(self._base)}",
                transient=True,
            )
        return response

    def _token(self, challenge: str, scope: str) -> str:
        fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        if "realm" not in fields:
            raise PushError(f"registry {self.registry.address} asks for a token but names no realm")
        params = {"service": fields.get("service", ""), "scope": fields.get("scope", scope)}
        try:
            answer = self._client.get(
                fields["realm"], params=params, auth=self._basic() or httpx.USE_CLIENT_DEFAULT
            )
        except httpx.HTTPError as exc:
            raise PushError(
                f"token service {fields['realm']} does not answer: {exc}", transient=True
            ) from exc
        if answer.status_code != 200:
            raise PushError(
                f"token service {fields['realm']} refused a token for {scope}: {answer.status_code}",
                hint="check username and password in the shipline-registry block",
            )
        body = answer.json()
        return str(body.get("token") or body.get("access_token") or "")

    def _unexpected(self, response: httpx.Response, what: str) -> PushError:
        detail = response.text.strip()[:300]
        return PushError(
            f"registry {self.registry.address}: {what} answered {response.status_code}: {detail}"
        )

    # -- manifests and blobs ----------------------------------------------------------------------

    def manifest(self, repository: str, reference: str) -> tuple[dict[str, Any], str]:
        """The manifest of ``repository`` at a tag or digest, and its digest.

        Raises:
            PushError: if it is missing, or is an index (multi-platform), which Shipline does not build on.
        """
        name = self.name(repository)
        response = self._request(
            "GET",
            f"{self._base}/v2/{name}/manifests/{reference}",
            scope=f"repository:{name}:pull",
            headers={"Accept": ", ".join([DOCKER_MANIFEST, OCI_MANIFEST, *_INDEXES])},
        )
        if response.status_code == 404:
            raise PushError(
                f"{repository}@{reference} is not in the registry", hint="was the base layer pushed?"
            )
        if response.status_code != 200:
            raise self._unexpected(response, f"manifest {name}:{reference}")
        manifest = response.json()
        if manifest.get("mediaType") in _INDEXES or "manifests" in manifest:
            raise PushError(f"{repository}@{reference} is a multi-platform index, not one image")
        return manifest, response.headers.get("Docker-Content-Digest") or sha256_digest(response.content)

    def blob(self, repository: str, digest: str) -> bytes:
        """A small blob (an image config), checked against its digest."""
        name = self.name(repository)
        response = self._request(
            "GET", f"{self._base}/v2/{name}/blobs/{digest}", scope=f"repository:{name}:pull"
        )
        if response.status_code != 200:
            raise self._unexpected(response, f"blob {name}@{digest}")
        if sha256_digest(response.content) != digest:
            raise PushError(f"registry {self.registry.address} served {name}@{digest} with other content")
        return response.content

    def has_blob(self, repository: str, digest: str) -> bool:
        name = self.name(repository)
        response = self._request(
            "HEAD", f"{self._base}/v2/{name}/blobs/{digest}", scope=f"repository:{name}:pull,push"
        )
        return response.status_code == 200

    def mount_blob(self, repository: str, digest: str, source: str) -> bool:
        """Link a blob of ``source`` into ``repository`` without uploading; False if the registry cannot."""
        name = self.name(repository)
        response = self._request(
            "POST",
            f"{self._base}/v2/{name}/blobs/uploads/",
            scope=f"repository:{name}:pull,push",
            params={"mount": digest, "from": self.name(source)},
        )
        if response.status_code == 201:
            return True
        if response.status_code == 202 and (location := response.headers.get("Location")):
            self._request("DELETE", self._absolute(location), scope=f"repository:{name}:pull,push")
        return False

    def upload_blob(self, repository: str, digest: str, content: bytes | Path) -> None:
        """Upload a blob in one request (streamed from the file when ``content`` is a path)."""
        name = self.name(repository)
        scope = f"repository:{name}:pull,push"
        started = self._request("POST", f"{self._base}/v2/{name}/blobs/uploads/", scope=scope)
        location = started.headers.get("Location")
        if started.status_code != 202 or not location:
            raise self._unexpected(started, f"upload to {name}")
        size = content.stat().st_size if isinstance(content, Path) else len(content)
        body: bytes | Iterator[bytes] = content if isinstance(content, bytes) else _chunks(content)
        finished = self._request(
            "PUT",
            # The upload URL keeps its state in the query: add the digest (params= would replace it).
            str(httpx.URL(self._absolute(location)).copy_add_param("digest", digest)),
            scope=scope,
            content=body,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        )
        if finished.status_code != 201:
            raise self._unexpected(finished, f"upload of {digest} to {name}")

    def copy_blob(self, repository: str, digest: str, source: str, scratch: Path) -> None:
        """Put a blob of ``source`` into ``repository``: mounted if the registry can, else copied through."""
        if self.has_blob(repository, digest) or self.mount_blob(repository, digest, source):
            return
        name = self.name(source)
        path = scratch / digest.replace(":", "-")
        try:
            with (
                self._client.stream(
                    "GET",
                    f"{self._base}/v2/{name}/blobs/{digest}",
                    auth=self._basic() or httpx.USE_CLIENT_DEFAULT,
                ) as response,
                path.open("wb") as out,
            ):
                if response.status_code != 200:
                    raise PushError(f"registry {self.registry.address}: blob {name}@{digest} is not readable")
                for chunk in response.iter_bytes(_CHUNK):
                    out.write(chunk)
        except httpx.HTTPError as exc:
            raise PushError(
                f"registry {self.registry.address} does not answer: {exc}", transient=True
            ) from exc
        try:
            self.upload_blob(repository, digest, path)
        finally:
            path.unlink(missing_ok=True)

    def put_manifest(self, repository: str, tag: str, manifest: bytes, media_type: str) -> str:
        """Store ``manifest`` as ``repository:tag``; return its digest (checked against the bytes sent)."""
        name = self.name(repository)
        response = self._request(
            "PUT",
            f"{self._base}/v2/{name}/manifests/{tag}",
            scope=f"repository:{name}:pull,push",
            content=manifest,
            headers={"Content-Type": media_type},
        )
        if response.status_code != 201:
            raise self._unexpected(response, f"manifest {name}:{tag}")
        digest = sha256_digest(manifest)
        stored = response.headers.get("Docker-Content-Digest", digest)
        if stored != digest:
            raise PushError(
                f"registry {self.registry.address} stored {name}:{tag} as {stored}, sent {digest}"
            )
        return digest

    def _absolute(self, location: str) -> str:
        return location if location.startswith(("http://", "https://")) else f"{self._base}{location}"


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            yield chunk


def canonical_json(value: Any) -> bytes:
    """JSON with sorted keys and no spaces: the same value always gives the same bytes (and digest)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
