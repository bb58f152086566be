"""The three image layers — OS, middleware, app — built locally and pushed to the registry.

- OS: a root filesystem made on the host (``debian``: debootstrap minbase of a suite, signatures checked,
  security updates applied; ``busybox``: the host's static busybox), imported with ``docker import``.
  Nothing is pulled from a registry outside.
- middleware: ``templates/images/middleware/{name}.Dockerfile.j2`` on top of the OS image by digest.
- app: the built artifact on top of the middleware by digest, assembled reproducibly without a build
  (``shipline.build.app_image``).

OS and middleware images are built once per name and version and then reused from the registry by the
digest Shipline recorded when it pushed them, never by their tag (``shipline.build.base_layers``);
``shipline.build.registry`` names and pushes them; root filesystems come from ``shipline.build.rootfs``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import docker
import jinja2
from docker.errors import APIError, DockerException

from shipline.build.base_layers import BaseLayerRecords, LayerKind, record_built, recorded_layer
from shipline.build.layer_names import TEMPLATES, middleware_names
from shipline.build.registry import PushedImage, Registry, push_image
from shipline.build.rootfs import DebianArchive, rootfs_tarball
from shipline.errors import BuildError
from shipline.spec import LayerRef

Log = Callable[[str], None]


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


def ensure_os_image(
    client: docker.DockerClient,
    *,
    registry: Registry,
    records: BaseLayerRecords,
    layer: LayerRef,
    cache_dir: Path,
    debian: DebianArchive,
    log: Log,
    warn: Log | None = None,
    rebuild: bool = False,
) -> PushedImage:
    """The OS image in the registry: reused by its recorded digest, else built, pushed and recorded.

    Raises:
        BuildError: if the root filesystem cannot be made (``rootfs_tarball``) or imported, or the
            recorded digest is gone from the registry.
    """
    repository = registry.os_repository(layer)
    if not rebuild and (
        reused := recorded_layer(
            registry, records, kind=LayerKind.OS, layer=layer, parent=None, log=log, warn=warn or log
        )
    ):
        return reused
    if rebuild:
        (cache_dir / f"{layer.name}-{layer.version}.tar").unlink(missing_ok=True)
    tarball = rootfs_tarball(layer, cache_dir, debian, log)
    try:
        client.api.import_image(
            src=str(tarball), repository=repository, tag=layer.version, changes=['CMD ["/bin/sh"]']
        )
    except (APIError, DockerException) as exc:
        raise BuildError(f"docker import of {tarball.name} failed: {exc}") from exc
    pushed = push_image(client, repository, layer.version, log)
    record_built(records, kind=LayerKind.OS, layer=layer, image=pushed, parent=None)
    return pushed


def ensure_middleware_image(
    client: docker.DockerClient,
    *,
    registry: Registry,
    records: BaseLayerRecords,
    layer: LayerRef,
    os_image: PushedImage,
    log: Log,
    warn: Log | None = None,
    rebuild: bool = False,
) -> PushedImage:
    """The middleware image in the registry: reused by its recorded digest if it was built on ``os_image``,
    else built on ``os_image``, pushed and recorded.

    Raises:
        BuildError: for an unknown middleware, a failed build, or a recorded digest gone from the registry.
    """
    if layer.name not in middleware_names():
        raise BuildError(
            f"unknown middleware {layer.name!r}", hint=f"available: {', '.join(middleware_names())}"
        )
    repository = registry.middleware_repository(layer)
    if not rebuild and (
        reused := recorded_layer(
            registry,
            records,
            kind=LayerKind.MIDDLEWARE,
            layer=layer,
            parent=os_image.digest,
            log=log,
            warn=warn or log,
        )
    ):
        return reused
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
    pushed = push_image(client, repository, layer.version, log)
    record_built(records, kind=LayerKind.MIDDLEWARE, layer=layer, image=pushed, parent=os_image.digest)
    return pushed
