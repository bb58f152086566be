"""The three image layers — OS, middleware, app — built locally and pushed to the registry.

- OS: a root filesystem made on the host (``debian``: debootstrap minbase of a suite; ``busybox``: the
  host's static busybox), imported with ``docker import``. Nothing is pulled from outside.
- middleware: ``templates/images/middleware/{name}.Dockerfile.j2`` on top of the OS image by digest.
- app: ``templates/images/app.Dockerfile.j2``: the built artifact on top of the middleware by digest.

OS and middleware images are built once per name and version and then reused from the registry. Names:
``{registry}/shipline/os/{name}:{version}``, ``{registry}/shipline/middleware/{name}:{version}``,
``{registry}/apps/{app}:{sha}``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import httpx
import jinja2
from docker.errors import APIError, DockerException
from pydantic import BaseModel

from shipline.config import PROJECT_ROOT
from shipline.errors import BuildError, PushError
from shipline.spec import ImageSpec, LayerRef

Log = Callable[[str], None]
TEMPLATES = PROJECT_ROOT / "templates" / "images"
BUSYBOX_APPLETS = ("sh", "ls", "cat", "echo", "env", "httpd", "mkdir", "rm", "sleep", "test", "wget", "[")
_MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


class PushedImage(BaseModel):
    """An image in the registry: where, which tag, which digest."""

    repository: str
    tag: str
    digest: str

    @property
    def by_digest(self) -> str:
        return f"{self.repository}@{self.digest}"


def os_repository(registry: str, layer: LayerRef) -> str:
    return f"{registry}/shipline/os/{layer.name}"


def middleware_repository(registry: str, layer: LayerRef) -> str:
    return f"{registry}/shipline/middleware/{layer.name}"


def app_repository(registry: str, app: str) -> str:
    return f"{registry}/apps/{app}"


def registry_digest(registry: str, repository: str, tag: str) -> str | None:
    """The digest of ``repository:tag`` in the registry, or None if it is not there.

    Raises:
        PushError: if the registry does not answer (transient).
    """
    name = repository.removeprefix(f"{registry}/")
    try:
        response = httpx.head(
            f"http://{registry}/v2/{name}/manifests/{tag}",
            headers={"Accept": _MANIFEST_TYPES},
            timeout=10,
            trust_env=False,
        )
    except httpx.HTTPError as exc:
        raise PushError(f"registry {registry} does not answer: {exc}", transient=True) from exc
    if response.status_code == 404:
        return None
    if response.status_code != 200:
        raise PushError(
            f"registry {registry} answered {response.status_code} for {name}:{tag}", transient=True
        )
    return response.headers.get("Docker-Content-Digest")


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


def _stream_build(events: Iterable[dict[str, Any]], log: Log, what: str) -> str:
    image_id = ""
    for event in events:
        if "error" in event or "errorDetail" in event:
            detail = event.get("errorDetail", {}).get("message") or event.get("error")
            raise BuildError(f"build of {what} failed: {str(detail).strip()}")
        if text := str(event.get("stream", "")).rstrip():
            log(text)
        image_id = (event.get("aux") or {}).get("ID", image_id)
    if not image_id:
        raise BuildError(f"build of {what} produced no image")
    return image_id


def _render(template: str, **values: Any) -> str:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - renders a Dockerfile; values are validated and JSON-quoted
        keep_trailing_newline=True,
    )
    return environment.get_template(template).render(**values)


def middleware_names() -> list[str]:
    """Middleware layers that templates/images/middleware/ defines."""
    return sorted(
        p.name.removesuffix(".Dockerfile.j2") for p in (TEMPLATES / "middleware").glob("*.Dockerfile.j2")
    )


def _rootfs_tar(layer: LayerRef, cache_dir: Path, mirror: str, log: Log) -> Path:
    """A tarball of the OS layer's root filesystem, made once and cached."""
    tarball = cache_dir / f"{layer.name}-{layer.version}.tar"
    if tarball.exists():
        return tarball
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as work:
        root = Path(work) / "rootfs"
        if layer.name == "busybox":
            _busybox_rootfs(root)
        elif layer.name == "debian":
            # "bookworm" or "bookworm-2026.11": the suite, then an optional label that forces a fresh build.
            _debian_rootfs(root, layer.version.split("-", 1)[0], mirror, log)
        else:
            raise BuildError(
                f"unknown OS layer {layer.name!r}", hint="use debian (a Debian suite) or busybox"
            )
        partial = Path(work) / "rootfs.tar"
        done = subprocess.run(
            ["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise BuildError(f"cannot pack the {layer.name} root filesystem: {done.stderr.strip()}")
        partial.replace(tarball)
    return tarball


def _busybox_rootfs(root: Path) -> None:
    busybox = shutil.which("busybox")
    if busybox is None:
        raise BuildError("busybox is not installed", hint="apt-get install busybox-static (make install)")
    (root / "bin").mkdir(parents=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    for applet in BUSYBOX_APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    for directory in ("tmp", "etc", "app", "workspace"):
        (root / directory).mkdir()
    (root / "tmp").chmod(0o1777)
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
    )
    (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")


def _debian_rootfs(root: Path, suite: str, mirror: str, log: Log) -> None:
    log(f"debootstrap --variant=minbase {suite} from {mirror}")
    done = subprocess.run(
        ["debootstrap", "--variant=minbase", suite, str(root), mirror],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0:
        last = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
        raise BuildError(
            f"debootstrap of {suite} failed: {last[0]}",
            hint="check the mirror, or SHIPLINE_DEBIAN_MIRROR",
            transient=True,
        )
    # What an image does not need: package caches, lists, docs, man pages, logs.
    for pattern in (
        "var/cache/apt/archives/*.deb",
        "var/lib/apt/lists/*",
        "usr/share/doc/*",
        "usr/share/man/*",
        "var/log/*.log",
    ):
        for path in root.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)


def ensure_os_image(
    client: docker.DockerClient,
    *,
    registry: str,
    layer: LayerRef,
    cache_dir: Path,
    mirror: str,
    log: Log,
    rebuild: bool = False,
) -> PushedImage:
    """The OS image in the registry: reused if there, else built from a root filesystem and pushed."""
    repository = os_repository(registry, layer)
    if not rebuild and (digest := registry_digest(registry, repository, layer.version)):
        log(f"reusing {repository}:{layer.version} ({digest})")
        return PushedImage(repository=repository, tag=layer.version, digest=digest)
    if rebuild:
        (cache_dir / f"{layer.name}-{layer.version}.tar").unlink(missing_ok=True)
    tarball = _rootfs_tar(layer, cache_dir, mirror, log)
    try:
        client.api.import_image(
            src=str(tarball), repository=repository, tag=layer.version, changes=['CMD ["/bin/sh"]']
        )
    except (APIError, DockerException) as exc:
        raise BuildError(f"docker import of {tarball.name} failed: {exc}") from exc
    return push_image(client, repository, layer.version, log)


def ensure_middleware_image(
    client: docker.DockerClient,
    *,
    registry: str,
    layer: LayerRef,
    os_image: PushedImage,
    log: Log,
    rebuild: bool = False,
) -> PushedImage:
    """The middleware image in the registry: reused if there, else built on ``os_image`` and pushed."""
    if layer.name not in middleware_names():
        raise BuildError(
            f"unknown middleware {layer.name!r}", hint=f"available: {', '.join(middleware_names())}"
        )
    repository = middleware_repository(registry, layer)
    if not rebuild and (digest := registry_digest(registry, repository, layer.version)):
        log(f"reusing {repository}:{layer.version} ({digest})")
        return PushedImage(repository=repository, tag=layer.version, digest=digest)
    dockerfile = _render(
        f"middleware/{layer.name}.Dockerfile.j2", os_image=os_image.by_digest, version=layer.version
    )
    with tempfile.TemporaryDirectory() as context:
        (Path(context) / "Dockerfile").write_text(dockerfile)
        events = client.api.build(
            path=context,
            tag=f"{repository}:{layer.version}",
            rm=True,
            forcerm=True,
            network_mode="host",
            decode=True,
        )
        _stream_build(events, log, f"{repository}:{layer.version}")
    return push_image(client, repository, layer.version, log)


def build_app_image(
    client: docker.DockerClient,
    *,
    registry: str,
    app: str,
    sha: str,
    source: str,
    artifact: Path,
    image: ImageSpec,
    middleware: PushedImage,
    log: Log,
) -> str:
    """Build ``{registry}/apps/{app}:{sha}`` from the artifact on top of the middleware; return its id.

    Raises:
        BuildError: if the artifact is missing or the build fails.
    """
    if not artifact.exists():
        raise BuildError(f"{app}: the build artifact {artifact.name} does not exist")
    labels = {
        "org.opencontainers.image.revision": sha,
        "org.opencontainers.image.source": source,
        "org.opencontainers.image.created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "shipline.app": app,
        "shipline.middleware": middleware.by_digest,
        "shipline.artifact": image.copy_artifact_to,
    }
    dockerfile = _render(
        "app.Dockerfile.j2",
        middleware_image=middleware.by_digest,
        workdir=image.workdir,
        copy_to=image.copy_artifact_to,
        command=image.command,
        labels=labels,
    )
    repository = app_repository(registry, app)
    with tempfile.TemporaryDirectory() as context:
        # A directory's contents land in copy_artifact_to; a file lands there under its own name.
        target = Path(context) / "artifact"
        if artifact.is_dir():
            ignored = shutil.ignore_patterns("__pycache__", ".git")
            shutil.copytree(artifact, target, symlinks=True, ignore=ignored)
        else:
            target.mkdir()
            shutil.copy2(artifact, target / artifact.name)
        (Path(context) / "Dockerfile").write_text(dockerfile)
        events = client.api.build(
            path=context, tag=f"{repository}:{sha}", rm=True, forcerm=True, network_mode="host", decode=True
        )
        return _stream_build(events, log, f"{repository}:{sha}")


def layer_digests(client: docker.DockerClient, reference: str) -> list[str]:
    """The filesystem layers (diff ids) of a local image, bottom first."""
    return list(client.images.get(reference).attrs["RootFS"]["Layers"])


def rebase_app_image(
    client: docker.DockerClient, *, registry: str, app_image: str, middleware: PushedImage, tag: str, log: Log
) -> PushedImage:
    """Rebuild an app image on new middleware without recompiling, and push it as ``tag``.

    The artifact is the app image's own top layer: a multi-stage ``COPY --from`` takes it from the old
    image (by digest) onto the new middleware; working directory, command and labels carry over.

    Raises:
        BuildError: if the image is not a Shipline app image or the build fails.
    """
    try:
        old = client.images.pull(app_image) if "@" in app_image else client.images.get(app_image)
    except (APIError, DockerException) as exc:
        raise BuildError(f"cannot read app image {app_image}: {exc}", transient=True) from exc
    labels = dict(old.labels or {})
    if "shipline.app" not in labels or "shipline.artifact" not in labels:
        raise BuildError(f"{app_image} is not a Shipline app image (labels shipline.app, shipline.artifact)")
    config = old.attrs["Config"]
    labels |= {
        "shipline.middleware": middleware.by_digest,
        "org.opencontainers.image.created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    dockerfile = _render(
        "rebase.Dockerfile.j2",
        middleware_image=middleware.by_digest,
        app_image=app_image,
        workdir=config.get("WorkingDir") or "/",
        artifact=labels["shipline.artifact"],
        command=config.get("Cmd") or [],
        labels=labels,
    )
    repository = app_repository(registry, labels["shipline.app"])
    with tempfile.TemporaryDirectory() as context:
        (Path(context) / "Dockerfile").write_text(dockerfile)
        events = client.api.build(
            path=context, tag=f"{repository}:{tag}", rm=True, forcerm=True, network_mode="host", decode=True
        )
        _stream_build(events, log, f"{repository}:{tag}")
    return push_image(client, repository, tag, log)
