"""Root filesystems of OS layers, made on the host and cached as tarballs: nothing is pulled from outside.

``debian``: debootstrap minbase of a suite; ``busybox``: the host's static busybox with a few applets.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from shipline.errors import BuildError
from shipline.spec import LayerRef

Log = Callable[[str], None]
BUSYBOX_APPLETS = ("sh", "ls", "cat", "echo", "env", "httpd", "mkdir", "rm", "sleep", "test", "wget", "[")


def rootfs_tarball(layer: LayerRef, cache_dir: Path, mirror: str, log: Log) -> Path:
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
