"""Root filesystems of OS layers, made on the host and cached as tarballs: nothing is pulled from outside.

``debian``: debootstrap minbase of a suite, every download checked against the Debian archive keyring
(``--force-check-gpg``), then brought up to date from the suite's security and updates suites, which stay
in the image's apt sources; ``busybox``: the host's static busybox with a few applets.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shipline.config import Settings
from shipline.errors import BuildError
from shipline.spec import LayerRef

Log = Callable[[str], None]
BUSYBOX_APPLETS = ("sh", "ls", "cat", "echo", "env", "httpd", "mkdir", "rm", "sleep", "test", "wget", "[")
IMAGE_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
"""The keyring apt inside an OS image checks with (debootstrap installs debian-archive-keyring there)."""
SOURCES_FILE = "etc/apt/sources.list.d/debian.sources"
KEYRING_HINT = "apt-get install debian-archive-keyring (make install), or set SHIPLINE_DEBIAN_KEYRING"
SECURITY_HINT = "check that the security suite answers, or set SHIPLINE_DEBIAN_SECURITY_MIRROR"


@dataclass(frozen=True)
class DebianArchive:
    """Where Debian OS layers come from, and the keyring their signatures are checked with."""

    mirror: str
    security_mirror: str
    """Empty: no security suite (an image then gets no security updates)."""
    keyring: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> DebianArchive:
        return cls(
            mirror=settings.debian_mirror,
            security_mirror=settings.debian_security_mirror,
            keyring=settings.debian_keyring,
        )


def rootfs_tarball(layer: LayerRef, cache_dir: Path, debian: DebianArchive, log: Log) -> Path:
    """A tarball of the OS layer's root filesystem, made once and cached.

    Raises:
        BuildError: for an unknown layer, a missing keyring, a bad signature, or a mirror that fails.
    """
    tarball = cache_dir / f"{layer.name}-{layer.version}.tar"
    if tarball.exists():
        return tarball
    if layer.name == "debian":
        _check_keyring(debian.keyring)  # before anything is downloaded
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as work:
        root = Path(work) / "rootfs"
        if layer.name == "busybox":
            _busybox_rootfs(root)
        elif layer.name == "debian":
            # "bookworm" or "bookworm-2026.11": the suite, then an optional label that forces a fresh build.
            _debian_rootfs(root, layer.version.split("-", 1)[0], debian, log)
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


def debootstrap_command(suite: str, root: Path, debian: DebianArchive) -> list[str]:
    """debootstrap of a minbase ``suite`` that refuses anything not signed by a key of the keyring."""
    command = ["debootstrap", "--variant=minbase", f"--keyring={debian.keyring}", "--force-check-gpg"]
    if any(url.startswith("https://") for url in (debian.mirror, debian.security_mirror)):
        command.append("--include=ca-certificates")  # apt inside the image verifies the https mirror
    return [*command, suite, str(root), debian.mirror]


def apt_sources(suite: str, debian: DebianArchive) -> str:
    """The image's apt sources (deb822): the suite and its updates, then its security suite if any."""
    entries = [(debian.mirror, f"{suite} {suite}-updates")]
    if debian.security_mirror:
        entries.append((debian.security_mirror, f"{suite}-security"))
    return "\n".join(
        f"Types: deb\nURIs: {url}\nSuites: {suites}\nComponents: main\nSigned-By: {IMAGE_KEYRING}\n"
        for url, suites in entries
    )


def _check_keyring(keyring: Path) -> None:
    if not keyring.is_file():
        raise BuildError(
            f"the Debian archive keyring {keyring} is missing: debootstrap cannot check the mirror's "
            "signatures without it",
            hint=KEYRING_HINT,
        )


def _first_error(output: str) -> str:
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("E:")]
    return (errors or lines[-1:] or ["no output"])[0]


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


def _debian_rootfs(root: Path, suite: str, debian: DebianArchive, log: Log) -> None:
    log(f"debootstrap --variant=minbase --force-check-gpg {suite} from {debian.mirror}")
    done = subprocess.run(
        debootstrap_command(suite, root, debian),
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0:
        output = done.stdout + done.stderr
        error = _first_error(output)
        if "signed by unknown key" in output or "signature" in error.lower() or "keyring" in error:
            raise BuildError(
                f"debootstrap of {suite} refused {debian.mirror}: {error} (checked with the keyring "
                f"{debian.keyring})",
                hint=f"{KEYRING_HINT}; a mirror whose signatures fail is not trusted",
            )
        raise BuildError(
            f"debootstrap of {suite} failed: {error}",
            hint="check the mirror, or SHIPLINE_DEBIAN_MIRROR",
            transient=True,
        )
    _upgrade(root, suite, debian, log)
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


def _upgrade(root: Path, suite: str, debian: DebianArchive, log: Log) -> None:
    """Write the image's apt sources, then apply what its updates and security suites hold today.

    ``--error-on=any``: apt-get update otherwise only warns when a suite cannot be fetched, and the image
    would silently miss its security updates.
    """
    (root / "etc" / "apt" / "sources.list").unlink(missing_ok=True)
    (root / SOURCES_FILE).write_text(apt_sources(suite, debian))
    security = debian.security_mirror or "no security suite (SHIPLINE_DEBIAN_SECURITY_MIRROR is empty)"
    log(f"apt-get upgrade of {suite} from {suite}-updates and {security}")
    done = subprocess.run(
        [
            "chroot",
            str(root),
            "sh",
            "-c",
            "apt-get -q -o Acquire::Languages=none update --error-on=any"
            " && apt-get -q -y -o Dpkg::Options::=--force-confold upgrade && apt-get clean",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"},
    )
    if done.returncode != 0:
        error = _first_error(done.stdout + done.stderr)
        raise BuildError(
            f"apt-get upgrade of the {suite} root filesystem failed: {error}",
            hint=SECURITY_HINT,
            transient=True,
        )
