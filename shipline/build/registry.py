"""The Docker registry (Distribution API v2) that holds base and app images, and pushes to it.

``Registry`` is where images go: its address (as it appears in image names), whether it speaks plain HTTP,
and its credentials. The ``shipline-registry`` block holds it; tasks read the block at run time, so an
operator who edits the block in the Prefect UI moves the next build's images.

Names: ``{registry}/shipline/os/{name}:{version}``, ``{registry}/shipline/middleware/{name}:{version}``,
``{registry}/apps/{app}:{sha}``.
"""

from __future__ import annotations

from collections.abc import Callable

import docker
import httpx
from docker.errors import APIError, DockerException
from pydantic import BaseModel, SecretStr

from shipline.errors import PushError
from shipline.spec import LayerRef

Log = Callable[[str], None]
_MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


class Registry(BaseModel):
    """A registry: ``address`` is host:port as it appears in image names."""

    address: str
    username: str | None = None
    password: SecretStr | None = None
    insecure: bool = True
    """Plain HTTP: loopback registries only."""

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

    def manifest_digest(self, repository: str, tag: str) -> str | None:
        """The digest of ``repository:tag`` in this registry, or None if it is not there.

        Raises:
            PushError: if the registry does not answer (transient).
        """
        name = repository.removeprefix(f"{self.address}/")
        scheme = "http" if self.insecure else "https"
        auth = None
        if self.username is not None:
            auth = (self.username, self.password.get_secret_value() if self.password else "")
        try:
            response = httpx.head(
                f"{scheme}://{self.address}/v2/{name}/manifests/{tag}",
                headers={"Accept": _MANIFEST_TYPES},
                auth=auth,
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
