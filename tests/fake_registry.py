"""A fake Docker registry that speaks the part of the Distribution API (v2) housekeeping uses, for unit tests.

``FakeRegistry.transport()`` plugs it into ``RegistryAPI`` (``httpx.MockTransport``): the catalog and tag
lists in pages with a ``Link`` header, manifests by tag or digest, image configs, and manifest deletes that
take the manifest's tags with it, as Distribution does. ``push`` adds an image whose layers are named by
the caller, so tests choose which blobs images share.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import httpx

from shipline.build.registry import Registry

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class FakeRegistry:
    """Repositories, their manifests and tags, and the blobs those reference."""

    address: str = "registry.test:5000"
    deletes_enabled: bool = True
    page_size: int = 2
    """Catalog and tag pages are this short, so that paging is exercised."""
    manifests: dict[str, dict[str, bytes]] = field(default_factory=dict)
    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    deleted: list[tuple[str, str]] = field(default_factory=list)

    def registry(self) -> Registry:
        return Registry(address=self.address)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def push(self, repository: str, tag: str, *, created: datetime | None, layers: dict[str, int]) -> str:
        """Add an image made at ``created`` whose layers are ``{name: size}``; return its digest."""
        config = json.dumps({"created": created.isoformat() if created else None, "tag": tag}).encode()
        self.blobs[digest_of(config)] = config
        document = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"digest": digest_of(config), "size": len(config)},
            "layers": [{"digest": layer_digest(name), "size": size} for name, size in layers.items()],
        }
        data = json.dumps(document).encode()
        digest = digest_of(data)
        self.manifests.setdefault(repository, {})[digest] = data
        self.tags.setdefault(repository, {})[tag] = digest
        return digest

    def tags_of(self, repository: str) -> dict[str, str]:
        return dict(self.tags.get(repository, {}))

    def digests_of(self, repository: str) -> set[str]:
        return set(self.manifests.get(repository, {}))

    def _page(
        self, request: httpx.Request, entries: list[str], key: str, extra: dict[str, str]
    ) -> httpx.Response:
        query = parse_qs(urlsplit(str(request.url)).query)
        size = min(int(query.get("n", ["100"])[0]), self.page_size)
        last = query.get("last", [""])[0]
        rest = [e for e in sorted(entries) if e > last]
        page = rest[:size]
        headers = {}
        if len(rest) > size:
            headers["Link"] = f'<{request.url.path}?last={page[-1]}&n={size}>; rel="next"'
        return httpx.Response(200, json={**extra, key: page or None}, headers=headers)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v2/_catalog":
            return self._page(request, list(self.manifests), "repositories", {})
        if path.endswith("/tags/list"):
            repository = path.removeprefix("/v2/").removesuffix("/tags/list")
            if repository not in self.manifests:
                return httpx.Response(404, json={"errors": [{"code": "NAME_UNKNOWN"}]})
            return self._page(request, list(self.tags.get(repository, {})), "tags", {"name": repository})
        if "/blobs/" in path:
            blob = path.rsplit("/", 1)[1]
            if blob not in self.blobs:
                return httpx.Response(404)
            return httpx.Response(200, content=self.blobs[blob])
        if "/manifests/" in path:
            repository, reference = path.removeprefix("/v2/").split("/manifests/")
            known = self.manifests.get(repository, {})
            tagged = self.tags.get(repository, {}).get(reference)
            digest = reference if reference.startswith("sha256:") else tagged
            if digest is None or digest not in known:
                return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
            if request.method == "DELETE":
                if not self.deletes_enabled:
                    return httpx.Response(405, json={"errors": [{"code": "UNSUPPORTED"}]})
                del known[digest]
                self.tags[repository] = {t: d for t, d in self.tags[repository].items() if d != digest}
                self.deleted.append((repository, digest))
                return httpx.Response(202)
            return httpx.Response(
                200,
                content=known[digest],
                headers={"Docker-Content-Digest": digest, "Content-Type": MANIFEST_TYPE},
            )
        return httpx.Response(404)


def layer_digest(name: str) -> str:
    """The digest the fake gives a layer called ``name``."""
    return digest_of(f"layer {name}".encode())
