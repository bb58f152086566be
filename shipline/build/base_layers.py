"""What Shipline builds on: the digest of each OS and middleware layer, recorded when Shipline pushed it.

A tag in the registry (``shipline/middleware/python3:3.11``) is a name whoever can push may move; the record
is in etcd, which only Shipline's user writes: ``/shipline/base-layers/{kind}/{name}/{version}`` (kind
``os`` or ``middleware``) → JSON ``{repository, digest, built_at, from}``, ``from`` being the digest of the
OS image a middleware was built on. Builds consult the record, never the tag:

- no record (or a record of another registry, after the registry block moved): the layer is built, pushed
  and recorded — a tag someone else pushed is never adopted;
- the tag points at the recorded digest: reused, nothing is built;
- the tag points elsewhere (pushed over) or is gone, and the recorded manifest is still there: reused by
  its recorded digest, with a warning naming the tag and both digests;
- the recorded manifest is gone: the stage fails; ``rebuild-base-layers`` builds and records it anew.

A middleware recorded on another OS digest than the one in use is built again on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

import httpx
from pydantic import BaseModel, ConfigDict, Field

from shipline.build.registry import PushedImage, Registry
from shipline.errors import BuildError
from shipline.etcd_client import connect
from shipline.spec import LayerRef

PREFIX = "/shipline/base-layers/"
REBUILD_HINT = (
    "run the rebuild-base-layers deployment (base-images/rebuild-base-layers) for this OS and middleware: "
    "it builds the layers again and records their new digests"
)

Log = Callable[[str], None]


class LayerKind(StrEnum):
    OS = "os"
    MIDDLEWARE = "middleware"


class BaseLayerRecord(BaseModel):
    """A layer Shipline built and pushed: where, its digest, when, and on what (a middleware's OS)."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    repository: str
    digest: str
    built_at: datetime
    parent: str | None = Field(default=None, alias="from")
    """The digest of the image it was built on (a middleware's OS image); None for an OS layer."""

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class BaseLayerRecords(Protocol):
    """Where the records live: etcd (``EtcdBaseLayerRecords``), or a dict in unit tests."""

    def get(self, kind: LayerKind, layer: LayerRef) -> BaseLayerRecord | None: ...

    def put(self, kind: LayerKind, layer: LayerRef, record: BaseLayerRecord) -> None: ...


def record_key(kind: LayerKind, layer: LayerRef) -> bytes:
    """``/shipline/base-layers/{kind}/{name}/{version}`` (name and version are validated by ``LayerRef``)."""
    return f"{PREFIX}{kind.value}/{layer.name}/{layer.version}".encode()


class EtcdBaseLayerRecords:
    """The records in etcd, read and written as Shipline's user.

    Raises (every call):
        ServiceUnavailableError: if etcd does not answer.
    """

    def __init__(self, etcd_url: str) -> None:
        self.etcd_url = etcd_url

    def get(self, kind: LayerKind, layer: LayerRef) -> BaseLayerRecord | None:
        async def read() -> BaseLayerRecord | None:
            async with connect(self.etcd_url) as client:
                found = await client.get(record_key(kind, layer))
            return None if found is None else BaseLayerRecord.model_validate_json(found.value)

        return asyncio.run(read())

    def put(self, kind: LayerKind, layer: LayerRef, record: BaseLayerRecord) -> None:
        async def write() -> None:
            async with connect(self.etcd_url) as client:
                await client.put(record_key(kind, layer), record.to_json())

        asyncio.run(write())


def recorded_layer(
    registry: Registry,
    records: BaseLayerRecords,
    *,
    kind: LayerKind,
    layer: LayerRef,
    parent: str | None,
    log: Log,
    warn: Log,
    transport: httpx.BaseTransport | None = None,
) -> PushedImage | None:
    """The layer to reuse, by the digest Shipline recorded; None when it must be built.

    Args:
        registry: The registry the layer is in.
        records: The records of the layers Shipline built.
        kind: OS or middleware.
        layer: Its name and version (the version is its tag).
        parent: For a middleware, the digest of the OS image it must be built on.
        log: Where the decision goes.
        warn: Where a tag that was pushed over is reported.
        transport: Replaces the network (a fake registry in tests).

    Raises:
        BuildError: the recorded manifest is no longer in the registry.
    """
    repository = (
        registry.os_repository(layer) if kind is LayerKind.OS else registry.middleware_repository(layer)
    )
    tag = f"{repository}:{layer.version}"
    record = records.get(kind, layer)
    if record is None or record.repository != repository:
        log(f"{tag}: no record of a build by Shipline in this registry: building it")
        return None
    if parent is not None and record.parent != parent:
        log(f"{tag} was built on {record.parent}, not on the OS image in use {parent}: building it again")
        return None
    recorded = PushedImage(repository=repository, tag=layer.version, digest=record.digest)
    name = repository.removeprefix(f"{registry.address}/")
    with registry.api(transport=transport) as api:
        tagged = api.manifest(name, layer.version)
        if tagged is not None and tagged.digest == record.digest:
            log(f"reusing {tag} ({record.digest}, built {record.built_at:%Y-%m-%d %H:%M} UTC)")
            return recorded
        gone = api.manifest(name, record.digest) is None
    if gone:
        raise BuildError(
            f"the {kind.value} layer {layer.name} {layer.version}: its recorded digest {record.digest} is no "
            f"longer in the registry ({repository})",
            hint=REBUILD_HINT,
        )
    now = "is gone" if tagged is None else f"points at {tagged.digest}"
    warn(
        f"the tag {tag} {now}, not at {record.digest}, which Shipline built and recorded on "
        f"{record.built_at:%Y-%m-%d %H:%M} UTC: someone pushed over it or deleted it. Building on the "
        f"recorded digest, not on the tag. Find who holds the registry's login, then {REBUILD_HINT}"
    )
    return recorded


def record_built(
    records: BaseLayerRecords, *, kind: LayerKind, layer: LayerRef, image: PushedImage, parent: str | None
) -> BaseLayerRecord:
    """Record ``image``, just pushed, as the digest every later build of ``layer`` uses."""
    record = BaseLayerRecord(
        repository=image.repository, digest=image.digest, built_at=datetime.now(UTC), parent=parent
    )
    records.put(kind, layer, record)
    return record
