"""The pending-security-updates report, read from captured output of its script in a Debian image."""

from pathlib import Path

from shipline.build.registry import PushedImage
from shipline.build.security_updates import (
    MARK,
    PendingUpdate,
    UpdatesReport,
    parse_security_suites,
    parse_simulated_upgrade,
)
from tasks.base_images import security_updates_key

CAPTURED = (Path(__file__).parent / "golden" / "apt-security-report.txt").read_text()
"""apt-cache policy, the mark, apt-get --simulate upgrade: a bookworm image built without the security
suite's updates, the suite then added to its sources."""


def test_the_captured_upgrade_lists_each_package_once_with_both_versions() -> None:
    policy, _, simulated = CAPTURED.partition(MARK)
    updates = parse_simulated_upgrade(simulated)
    assert len(updates) == 12  # "12 upgraded": the Inst lines, not the Conf lines
    assert [u.package for u in updates][:3] == ["perl-base", "liblzma5", "libzstd1"]
    assert updates[0] == PendingUpdate(
        package="perl-base",
        installed="5.36.0-7+deb12u3",
        candidate="5.36.0-7+deb12u4",
        origin="Debian-Security:12/oldstable-security",
    )
    zlib = next(u for u in updates if u.package == "zlib1g")
    assert (zlib.installed, zlib.candidate) == ("1:1.2.13.dfsg-1", "1:1.2.13.dfsg-1+deb12u1")
    pam = next(u for u in updates if u.package == "libpam-modules-bin")  # a line with trailing notes
    assert pam.candidate == "1.5.2-6+deb12u3" and pam.origin == "Debian-Security:12/oldstable-security"
    assert all(u.security for u in updates)
    assert parse_security_suites(policy) == ["bookworm-security"]


def test_updates_from_other_suites_are_counted_apart_from_security_ones() -> None:
    simulated = "\n".join(
        [
            "Inst base-files [12.4+deb12u9] (12.4+deb12u10 Debian:12.10/stable [amd64])",
            "Inst libc6 [2.36-9+deb12u9] (2.36-9+deb12u10 Debian:12.10/stable,"
            " Debian-Security:12/stable-security [amd64])",
            "Inst tzdata [2025a-0+deb12u1] (2025b-0+deb12u1 Debian:12-updates/stable-updates [all])",
            "Inst newdep (1.0-1 Debian:12.10/stable [amd64])",
            "Conf libc6 (2.36-9+deb12u10 Debian:12.10/stable [amd64])",
        ]
    )
    updates = parse_simulated_upgrade(simulated)
    assert [(u.package, u.security) for u in updates] == [
        ("base-files", False),
        ("libc6", True),  # offered by the point release and the security suite
        ("tzdata", False),
        ("newdep", False),
    ]
    assert updates[3].installed == ""
    report = UpdatesReport(image="r/mw@sha256:1", security_suites=["bookworm-security"], updates=updates)
    assert [u.package for u in report.security_updates] == ["libc6"]
    assert report.summary().startswith(
        "r/mw@sha256:1: 1 package(s) with pending security updates from bookworm-security, 3 other"
    )


def test_an_image_without_a_security_suite_says_so_and_what_to_set() -> None:
    policy, _, simulated = CAPTURED.partition(MARK)
    without = "\n".join(line for line in policy.splitlines() if "security" not in line)
    report = UpdatesReport(
        image="r/mw@sha256:2",
        security_suites=parse_security_suites(without),
        updates=parse_simulated_upgrade(simulated),
    )
    assert report.security_suites == []
    assert "its apt sources hold no security suite" in report.summary()
    assert "SHIPLINE_DEBIAN_SECURITY_MIRROR" in report.summary()


def test_nothing_pending_is_an_empty_list() -> None:
    done = "Reading package lists...\nCalculating upgrade...\n0 upgraded, 0 newly installed, 0 to remove.\n"
    assert parse_simulated_upgrade(done) == []


def test_the_artifact_key_is_lower_case_with_dashes() -> None:
    image = PushedImage(
        repository="127.0.0.1:5000/shipline/middleware/python3", tag="3.11_B", digest="sha256:a"
    )
    assert security_updates_key(image) == "security-updates-python3-3-11-b"
