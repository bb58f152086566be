"""Debian OS layers: the keyring is checked before anything is downloaded, debootstrap refuses unsigned
archives, and the image's apt sources hold the security suite."""

from pathlib import Path

import pytest

from shipline.build.rootfs import DebianArchive, apt_sources, debootstrap_command, rootfs_tarball
from shipline.config import Settings
from shipline.errors import BuildError
from shipline.spec import LayerRef
from shipline.stack import doctor

ARCHIVE = DebianArchive(
    mirror="http://deb.debian.org/debian",
    security_mirror="http://deb.debian.org/debian-security",
    keyring=Path("/usr/share/keyrings/debian-archive-keyring.gpg"),
)


def test_an_os_build_without_the_keyring_fails_before_downloading(tmp_path: Path) -> None:
    missing = tmp_path / "keyrings" / "debian-archive-keyring.gpg"
    lines: list[str] = []
    with pytest.raises(BuildError) as caught:
        rootfs_tarball(
            LayerRef(name="debian", version="bookworm-2026.12"),
            tmp_path / "cache",
            DebianArchive(mirror=ARCHIVE.mirror, security_mirror=ARCHIVE.security_mirror, keyring=missing),
            lines.append,
        )
    assert f"the Debian archive keyring {missing} is missing" in caught.value.message
    assert caught.value.hint and "apt-get install debian-archive-keyring" in caught.value.hint
    assert "SHIPLINE_DEBIAN_KEYRING" in caught.value.hint
    assert not caught.value.transient  # a retry would not install it
    assert lines == [] and not (tmp_path / "cache").exists()  # debootstrap never ran


def test_a_busybox_layer_needs_no_keyring(tmp_path: Path) -> None:
    missing = DebianArchive(mirror=ARCHIVE.mirror, security_mirror="", keyring=tmp_path / "none.gpg")
    tarball = rootfs_tarball(LayerRef(name="busybox", version="k1"), tmp_path, missing, print)
    assert tarball.is_file()


def test_debootstrap_checks_every_signature_with_the_keyring(tmp_path: Path) -> None:
    command = debootstrap_command("bookworm", tmp_path / "root", ARCHIVE)
    assert command[0] == "debootstrap"
    assert "--keyring=/usr/share/keyrings/debian-archive-keyring.gpg" in command
    assert "--force-check-gpg" in command
    assert command[-3:] == ["bookworm", str(tmp_path / "root"), "http://deb.debian.org/debian"]
    assert not any(part.startswith("--include") for part in command)


def test_an_https_archive_brings_the_certificates_apt_needs_in_the_image(tmp_path: Path) -> None:
    https = DebianArchive(
        mirror=ARCHIVE.mirror,
        security_mirror="https://security.example.org/debian-security",
        keyring=ARCHIVE.keyring,
    )
    assert "--include=ca-certificates" in debootstrap_command("bookworm", tmp_path, https)


def test_the_image_sources_hold_the_updates_and_security_suites() -> None:
    sources = apt_sources("bookworm", ARCHIVE)
    entries = [dict(line.split(": ", 1) for line in entry.splitlines()) for entry in sources.split("\n\n")]
    assert entries == [
        {
            "Types": "deb",
            "URIs": "http://deb.debian.org/debian",
            "Suites": "bookworm bookworm-updates",
            "Components": "main",
            "Signed-By": "/usr/share/keyrings/debian-archive-keyring.gpg",
        },
        {
            "Types": "deb",
            "URIs": "http://deb.debian.org/debian-security",
            "Suites": "bookworm-security",
            "Components": "main",
            "Signed-By": "/usr/share/keyrings/debian-archive-keyring.gpg",
        },
    ]


def test_without_a_security_mirror_the_sources_have_no_security_suite() -> None:
    none = DebianArchive(mirror=ARCHIVE.mirror, security_mirror="", keyring=ARCHIVE.keyring)
    assert "security" not in apt_sources("trixie", none)
    assert "Suites: trixie trixie-updates" in apt_sources("trixie", none)


def test_the_archive_comes_from_the_settings(tmp_path: Path) -> None:
    settings = Settings(
        debian_mirror="http://mirror.example.org/debian/",
        debian_security_mirror="",
        debian_keyring=tmp_path / "k.gpg",
    )
    assert DebianArchive.from_settings(settings) == DebianArchive(
        mirror="http://mirror.example.org/debian", security_mirror="", keyring=tmp_path / "k.gpg"
    )
    assert DebianArchive.from_settings(Settings()) == ARCHIVE


def test_doctor_says_when_the_keyring_is_missing(tmp_path: Path) -> None:
    missing = doctor._debian_keyring(Settings(home=tmp_path, debian_keyring=tmp_path / "none.gpg"))
    assert (missing.name, missing.ok) == ("debian keyring", False)
    assert f"{tmp_path / 'none.gpg'} not found" in missing.detail
    assert "apt-get install debian-archive-keyring" in missing.fix
    present = tmp_path / "k.gpg"
    present.write_bytes(b"\x99")
    assert doctor._debian_keyring(Settings(home=tmp_path, debian_keyring=present)).ok
