"""The three image layers — OS, middleware, app — built locally and pushed to the registry.

- OS: a root filesystem made on the host (``debian``: debootstrap minbase of a suite; ``busybox``: the
  host's static busybox), imported with ``docker import``. Nothing is pulled from outside.
- middleware: ``templates/images/middleware/{name}.Dockerfile.j2`` on top of the OS image by digest.
- app: ``templates/images/app.Dockerfile.j2``: the built artifact on top of the middleware by digest.

OS and middleware images are built once per name and version and then reused from the registry
(``shipline.build.registry`` names and pushes them); root filesystems come from ``shipline.build.rootfs``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import jinja2
from docker.errors import APIError, DockerException

from shipline.build.registry import PushedImage, Registry, push_image
from shipline.build.rootfs import rootfs_tarball
from shipline.config import PROJECT_ROOT
from shipline.errors import BuildError
from shipline.spec import ImageSpec, LayerRef

Log = Callable[[str], None]
TEMPLATES = PROJECT_ROOT / "templates" / "images"


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


def ensure_os_image(
    client: docker.DockerClient,
    *,
    registry: Registry,
    layer: LayerRef,
    cache_dir: Path,
    mirror: str,
    log: Log,
    rebuild: bool = False,
) -> PushedImage:
    """The OS image in the registry: reused if there, else built from a root filesystem and pushed."""
    repository = registry.os_repository(layer)
    if not rebuild and (digest := registry.manifest_digest(repository, layer.version)):
        log(f"reusing {repository}:{layer.version} ({digest})")
        return PushedImage(repository=repository, tag=layer.version, digest=digest)
    if rebuild:
        (cache_dir / f"{layer.name}-{layer.version}.tar").unlink(missing_ok=True)
    tarball = rootfs_tarball(layer, cache_dir, mirror, log)
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
    registry: Registry,
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
    repository = registry.middleware_repository(layer)
    if not rebuild and (digest := registry.manifest_digest(repository, layer.version)):
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
    registry: Registry,
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
    repository = registry.app_repository(app)
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


def rebase_app_image(
    client: docker.DockerClient,
    *,
    registry: Registry,
    app_image: str,
    middleware: PushedImage,
    tag: str,
    log: Log,
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
    repository = registry.app_repository(labels["shipline.app"])
    with tempfile.TemporaryDirectory() as context:
        (Path(context) / "Dockerfile").write_text(dockerfile)
        events = client.api.build(
            path=context, tag=f"{repository}:{tag}", rm=True, forcerm=True, network_mode="host", decode=True
        )
        _stream_build(events, log, f"{repository}:{tag}")
    return push_image(client, repository, tag, log)
