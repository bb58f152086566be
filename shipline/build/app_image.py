"""The app layer, assembled reproducibly: the same commit on the same middleware gives the same digest.

The layer is a tarball Shipline writes itself, not a ``docker build``: entries sorted by path, owned by
root, modes normalised (0755 for directories and executables, 0644 otherwise), every time the commit's
time, gzip without a name or time. The image config takes the middleware's config and adds the layer,
command, working directory and labels, with the commit's time as ``created``; config and manifest are
canonical JSON. So a second build of one commit — another run, another worker, a retry — produces the
same bytes and the same digest, as ``SOURCE_DATE_EPOCH`` builds, ko and Jib do.

The artifact comes from the app's workspace, which an app's build wrote: it is read without following
any symlink (links are stored as links; a link as the artifact itself, or a path that leaves the
workspace, is refused), and only regular files, directories and links are taken.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

from pydantic import BaseModel

from shipline.build.registry import PushedImage, Registry, canonical_json, sha256_digest
from shipline.errors import BuildError, PushError, ShiplineError

Log = Callable[[str], None]
SKIPPED_NAMES = frozenset({"__pycache__", ".git"})
_BUFFER = 1 << 20


class Layer(BaseModel):
    """A gzipped layer tarball: ``digest`` of the gzip, ``diff_id`` of the tar inside, ``size`` in bytes."""

    digest: str
    diff_id: str
    size: int


class BuiltImage(BaseModel):
    """An app image assembled on disk, ready to push: its layer, config and manifest, and where it goes."""

    repository: str
    tag: str
    directory: Path
    digest: str
    """The manifest's digest: what the registry will report after the push."""
    media_type: str
    base_repository: str

    @property
    def by_digest(self) -> str:
        return f"{self.repository}@{self.digest}"


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Hashing:
    """A write-only stream that hashes and counts what passes through it."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target, self.hash, self.size = target, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.target.write(data)

    def flush(self) -> None:
        self.target.flush()


def _entries(artifact: Path, destination: PurePosixPath) -> Iterator[tuple[PurePosixPath, Path]]:
    """(path in the image, path on disk) of the artifact, sorted, without following links.

    A directory's contents land in ``destination``; a file lands there under its own name.
    """
    if artifact.is_dir() and not artifact.is_symlink():
        stack: list[tuple[PurePosixPath, Path]] = [(destination, artifact)]
        while stack:
            inside, directory = stack.pop()
            for name in sorted(os.listdir(directory), reverse=True):
                if name in SKIPPED_NAMES:
                    continue
                path = directory / name
                yield_at = inside / name
                if path.is_dir() and not path.is_symlink():
                    stack.append((yield_at, path))
                yield yield_at, path
    else:
        yield destination / artifact.name, artifact


def _tarinfo(name: str, kind: bytes, mode: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_layer(
    artifact: Path, *, destination: str, directories: list[str], mtime: datetime, out: Path, log: Log
) -> Layer:
    """Write the app layer: ``directories`` (and their parents), then the artifact at ``destination``.

    Raises:
        BuildError: for an entry a layer must not hold (a whiteout name) or an artifact that is a link.
    """
    if artifact.is_symlink():
        raise BuildError(
            f"the build artifact {artifact.name} is a symbolic link",
            hint="build.artifact must name a real file or directory",
        )
    epoch = int(mtime.timestamp())
    wanted = {PurePosixPath(destination), *(PurePosixPath(d) for d in directories)}
    parents = sorted({p for d in wanted for p in (d, *d.parents) if p != PurePosixPath("/")})
    by_path: dict[PurePosixPath, Path | None] = dict.fromkeys(parents)
    by_path.update(_entries(artifact, PurePosixPath(destination)))
    members = sorted(by_path.items(), key=lambda member: str(member[0]))
    skipped = 0
    with out.open("wb") as raw:
        gz_out = _Hashing(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=gz_out, mtime=0, compresslevel=6) as gz:
            tar_out = _Hashing(gz)  # type: ignore[arg-type]
            with tarfile.open(fileobj=tar_out, mode="w|", format=tarfile.PAX_FORMAT) as archive:  # type: ignore[call-overload]
                for inside, path in members:
                    name = str(inside).lstrip("/")
                    if PurePosixPath(name).name.startswith(".wh."):
                        raise BuildError(
                            f"the artifact holds {name}: a .wh. name deletes files in image layers"
                        )
                    if path is None:
                        archive.addfile(_tarinfo(name, tarfile.DIRTYPE, 0o755, epoch))
                        continue
                    status = path.lstat()
                    if stat.S_ISLNK(status.st_mode):
                        info = _tarinfo(name, tarfile.SYMTYPE, 0o777, epoch)
                        info.linkname = os.readlink(path)
                        archive.addfile(info)
                    elif stat.S_ISDIR(status.st_mode):
                        archive.addfile(_tarinfo(name, tarfile.DIRTYPE, 0o755, epoch))
                    elif stat.S_ISREG(status.st_mode):
                        executable = status.st_mode & 0o111
                        info = _tarinfo(name, tarfile.REGTYPE, 0o755 if executable else 0o644, epoch)
                        with path.open("rb") as data:
                            info.size = os.fstat(data.fileno()).st_size
                            archive.addfile(info, data)
                    else:
                        skipped += 1
                        log(f"left out {name}: not a regular file, directory or link")
    if skipped:
        log(f"left out {skipped} special file(s) of the artifact")
    return Layer(
        digest=f"sha256:{gz_out.hash.hexdigest()}",
        diff_id=f"sha256:{tar_out.hash.hexdigest()}",
        size=gz_out.size,
    )


def image_config(
    base: dict[str, Any],
    *,
    diff_ids: list[str],
    created: datetime,
    command: list[str],
    workdir: str,
    labels: dict[str, str],
    history: str,
) -> dict[str, Any]:
    """The app image's config: the base's, with the app's layer(s), command, working directory and labels.

    What described the base's own build (its container, builder version) is dropped; the rest — user,
    environment, entrypoint, exposed ports — is inherited as ``FROM`` would.
    """
    config = copy.deepcopy(base)
    for key in ("container", "container_config", "docker_version", "id", "parent"):
        config.pop(key, None)
    run = dict(config.get("config") or {})
    run["Cmd"] = list(command)
    run["WorkingDir"] = workdir
    run["Labels"] = {**(run.get("Labels") or {}), **labels}
    for key in ("Image", "Hostname", "Domainname"):
        run.pop(key, None)
    config["config"] = run
    config["created"] = rfc3339(created)
    config["rootfs"] = {
        "type": "layers",
        "diff_ids": list(base.get("rootfs", {}).get("diff_ids", [])) + diff_ids,
    }
    entries = list(config.get("history") or [])
    entries += [{"created": rfc3339(created), "created_by": history, "comment": "shipline"} for _ in diff_ids]
    config["history"] = entries
    return config


def _layer_media_type(manifest: dict[str, Any]) -> str:
    layers = manifest.get("layers") or []
    if layers:
        return str(layers[-1]["mediaType"])
    oci = manifest.get("mediaType") == "application/vnd.oci.image.manifest.v1+json"
    return (
        "application/vnd.oci.image.layer.v1.tar+gzip"
        if oci
        else "application/vnd.docker.image.rootfs.diff.tar.gzip"
    )


def assemble(
    directory: Path,
    *,
    repository: str,
    tag: str,
    base_repository: str,
    base_manifest: dict[str, Any],
    config: dict[str, Any],
    layers: list[tuple[str, int]],
) -> BuiltImage:
    """Write config.json and manifest.json into ``directory``; layers are there or in the registry."""
    media_type = str(base_manifest.get("mediaType") or "application/vnd.docker.distribution.manifest.v2+json")
    config_bytes = canonical_json(config)
    config_media_type = str(base_manifest["config"]["mediaType"])
    layer_type = _layer_media_type(base_manifest)
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {
            "mediaType": config_media_type,
            "size": len(config_bytes),
            "digest": sha256_digest(config_bytes),
        },
        "layers": [
            *base_manifest.get("layers", []),
            *({"mediaType": layer_type, "size": size, "digest": digest} for digest, size in layers),
        ],
    }
    manifest_bytes = canonical_json(manifest)
    (directory / "config.json").write_bytes(config_bytes)
    (directory / "manifest.json").write_bytes(manifest_bytes)
    return BuiltImage(
        repository=repository,
        tag=tag,
        directory=directory,
        digest=sha256_digest(manifest_bytes),
        media_type=media_type,
        base_repository=base_repository,
    )


def app_labels(
    *, app: str, sha: str, source: str, committed: datetime, middleware: PushedImage, copy_to: str
) -> dict[str, str]:
    """The labels of an app image: OCI's revision, source and created (the commit's), and Shipline's own."""
    return {
        "org.opencontainers.image.revision": sha,
        "org.opencontainers.image.source": source,
        "org.opencontainers.image.created": rfc3339(committed),
        "shipline.app": app,
        "shipline.middleware": middleware.by_digest,
        "shipline.artifact": copy_to,
    }


def _blob_path(directory: Path, digest: str) -> Path:
    return directory / digest.replace(":", "-")


def build(
    registry: Registry,
    *,
    repository: str,
    tag: str,
    artifact: Path,
    workspace: Path,
    copy_to: str,
    workdir: str,
    command: list[str],
    labels: dict[str, str],
    created: datetime,
    middleware: PushedImage,
    directory: Path,
    log: Log,
) -> BuiltImage:
    """Assemble the app image of ``artifact`` on ``middleware`` into ``directory`` (emptied first).

    Raises:
        BuildError: if the artifact is missing, a link, or outside the workspace.
        PushError: if the middleware cannot be read from the registry.
    """
    if not artifact.exists() and not artifact.is_symlink():
        raise BuildError(f"the build artifact {artifact.name} does not exist")
    try:
        artifact.parent.resolve().relative_to(workspace.resolve())
    except ValueError:
        raise BuildError(
            f"the build artifact {artifact.name} is outside the workspace (a link on its path leads out)",
            hint="build.artifact must be a path inside the repository",
        ) from None
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.iterdir():
        stale.unlink()
    with registry.api() as api:
        base_manifest, _ = api.manifest_document(middleware.repository, middleware.digest)
        base_config = api.blob(middleware.repository, base_manifest["config"]["digest"])
    written = directory / "layer.partial"
    layer = write_layer(
        artifact, destination=copy_to, directories=[workdir], mtime=created, out=written, log=log
    )
    written.rename(_blob_path(directory, layer.digest))
    log(f"app layer {layer.digest}: {layer.size} bytes, content {layer.diff_id}")
    config = image_config(
        json.loads(base_config),
        diff_ids=[layer.diff_id],
        created=created,
        command=command,
        workdir=workdir,
        labels=labels,
        history=f"shipline: the build artifact in {copy_to}",
    )
    built = assemble(
        directory,
        repository=repository,
        tag=tag,
        base_repository=middleware.repository,
        base_manifest=base_manifest,
        config=config,
        layers=[(layer.digest, layer.size)],
    )
    log(f"assembled {repository}:{tag} as {built.digest}")
    return built


def push(registry: Registry, built: BuiltImage, log: Log) -> PushedImage:
    """Push an assembled image: base layers mounted from the middleware's repository, new blobs uploaded.

    A blob the registry has is not sent again, so a retried push sends only what is missing.

    Raises:
        PushError: with the registry's message (transient when a retry may succeed).
    """
    try:
        manifest_bytes = (built.directory / "manifest.json").read_bytes()
    except OSError as exc:
        raise BuildError(
            f"the assembled image of {built.repository}:{built.tag} is gone: {exc}",
            hint="run the delivery again: its build stage assembles the image anew",
        ) from exc
    try:
        digest = _push(registry, built, manifest_bytes, log)
    except ShiplineError as exc:
        raise PushError(
            f"push of {built.repository}:{built.tag} failed: {exc.message}",
            hint=exc.hint,
            transient=exc.transient,
        ) from exc
    log(f"pushed {built.repository}:{built.tag} as {digest}")
    return PushedImage(repository=built.repository, tag=built.tag, digest=digest)


def _push(registry: Registry, built: BuiltImage, manifest_bytes: bytes, log: Log) -> str:
    manifest = json.loads(manifest_bytes)
    with registry.api() as api:
        for layer in manifest["layers"]:
            local = _blob_path(built.directory, layer["digest"])
            if api.has_blob(built.repository, layer["digest"]):
                continue
            if local.exists():
                log(f"uploading layer {layer['digest']} ({layer['size']} bytes)")
                api.upload_blob(built.repository, layer["digest"], local)
            else:
                api.copy_blob(built.repository, layer["digest"], built.base_repository, built.directory)
        config = manifest["config"]
        if not api.has_blob(built.repository, config["digest"]):
            api.upload_blob(
                built.repository, config["digest"], (built.directory / "config.json").read_bytes()
            )
        return api.put_manifest(built.repository, built.tag, manifest_bytes, built.media_type)


def rebase(
    registry: Registry, *, app_image: str, middleware: PushedImage, directory: Path, log: Log
) -> PushedImage:
    """Move an app image onto new middleware without recompiling; push it as ``{revision}-{mw tag}``.

    The app's own layers (those above the middleware it was built on) are kept blob for blob; the config
    is the new middleware's with the app's command, working directory, labels and time. The same app image
    on the same middleware always gives the same digest.

    Raises:
        BuildError: if ``app_image`` is not a Shipline app image.
        PushError: if the registry cannot be read or written.
    """
    repository, _, digest = app_image.partition("@")
    if not digest:
        raise BuildError(f"{app_image} is not an image by digest (repository@sha256:…)")
    with registry.api() as api:
        old_manifest, _ = api.manifest_document(repository, digest)
        old = json.loads(api.blob(repository, old_manifest["config"]["digest"]))
        run = old.get("config") or {}
        labels = dict(run.get("Labels") or {})
        if "shipline.app" not in labels or "shipline.middleware" not in labels:
            raise BuildError(
                f"{app_image} is not a Shipline app image (labels shipline.app, shipline.middleware)"
            )
        old_base_repository, _, old_base_digest = labels["shipline.middleware"].partition("@")
        old_base, _ = api.manifest_document(old_base_repository, old_base_digest)
        kept = len(old_base.get("layers", []))
        new_base, _ = api.manifest_document(middleware.repository, middleware.digest)
        new_config = json.loads(api.blob(middleware.repository, new_base["config"]["digest"]))
    app_layers = old_manifest["layers"][kept:]
    diff_ids = old["rootfs"]["diff_ids"][kept:]
    labels["shipline.middleware"] = middleware.by_digest
    config = image_config(
        new_config,
        diff_ids=diff_ids,
        created=datetime.fromisoformat(str(old["created"]).replace("Z", "+00:00")),
        command=list(run.get("Cmd") or []),
        workdir=str(run.get("WorkingDir") or "/"),
        labels=labels,
        history=f"shipline: the app layer of {app_image}",
    )
    directory.mkdir(parents=True, exist_ok=True)
    tag = f"{labels.get('org.opencontainers.image.revision', 'unknown')}-{middleware.tag}"
    built = assemble(
        directory,
        repository=repository,
        tag=tag,
        base_repository=middleware.repository,
        base_manifest=new_base,
        config=config,
        layers=[(layer["digest"], int(layer["size"])) for layer in app_layers],
    )
    log(f"moved {app_image} onto {middleware.by_digest}")
    return push(registry, built, log)
