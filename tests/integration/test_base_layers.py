"""Debian base layers you can trust, against the real Debian mirror, Docker Engine, registry and Prefect:
signatures checked with the keyring, the security suite in the image and applied, pending updates reported.

One test builds a whole OS image (about a minute); the others fail within seconds.
"""

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

from flows.base_images import base_images
from shipline.build.rootfs import SOURCES_FILE, DebianArchive, _upgrade, rootfs_tarball
from shipline.build.security_updates import UpdatesReport, pending_updates
from shipline.config import Settings
from shipline.docker import docker_client
from shipline.errors import BuildError
from shipline.spec import ImageSpec, LayerRef
from tasks.base_images import BaseLayers

UNREACHABLE = "http://127.0.0.1:1/debian-security"
"""A security suite nothing answers for: apt must fail, not warn and carry on without it."""


def test_a_mirror_not_signed_by_the_keyring_is_refused(tmp_path: Path) -> None:
    """debootstrap gets the keyring and --force-check-gpg: with a keyring of no key, the Release fails."""
    empty = tmp_path / "empty.gpg"
    empty.write_bytes(b"")
    archive = DebianArchive(
        mirror=Settings().debian_mirror, security_mirror=Settings().debian_security_mirror, keyring=empty
    )
    with pytest.raises(BuildError) as caught:
        rootfs_tarball(
            LayerRef(name="debian", version="bookworm-unsigned"), tmp_path / "cache", archive, print
        )
    assert "refused http://deb.debian.org/debian" in caught.value.message
    assert "signed by unknown key" in caught.value.message and str(empty) in caught.value.message
    assert caught.value.hint and "debian-archive-keyring" in caught.value.hint
    assert not caught.value.transient
    assert not (tmp_path / "cache" / "debian-bookworm-unsigned.tar").exists()


def test_rebuild_flow_builds_a_trusted_os_and_reports_its_security_updates(
    settings: Settings, tmp_path: Path
) -> None:
    version = f"bookworm-t{uuid.uuid4().hex[:8]}"
    image = ImageSpec(
        os=LayerRef(name="debian", version=version),
        middleware=LayerRef(name="host-jre", version=version),
        command=["true"],
    )
    state = base_images(image, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    report, layers = result["security-updates"], result["layers"]
    assert isinstance(report, UpdatesReport) and isinstance(layers, BaseLayers)
    assert report.image == layers.middleware.by_digest
    assert report.security_suites == ["bookworm-security"]
    assert report.security_updates == []  # the build applied them

    client = docker_client(settings.docker_url)
    sources = run(client, layers.os.by_digest, f"cat /{SOURCES_FILE}; ls /etc/apt/sources.list 2>&1; true")
    assert "URIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n" in sources
    assert "Suites: bookworm bookworm-updates\n" in sources
    assert sources.count("Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg") == 2
    assert "No such file" in sources  # debootstrap's one-line sources.list is gone

    with get_client(sync_client=True) as prefect:
        (artifact,) = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[f"security-updates-host-jre-{version}"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
            )
        )
    assert artifact.type == "table" and artifact.description
    assert artifact.description.startswith(
        f"{layers.middleware.by_digest}: 0 package(s) with pending security updates from bookworm-security"
    )
    data = artifact.data
    rows: list[dict[str, Any]] = json.loads(data) if isinstance(data, str) else data  # type: ignore[assignment]
    assert rows == [{"package": "(none)", "installed": "", "candidate": "", "suite": ""}]

    # The report fails, rather than reporting nothing, when the image's security suite does not answer.
    only = f"sed -i -e 's#http://deb.debian.org/debian-security#{UNREACHABLE}#' -e '1,6d' /{SOURCES_FILE}"
    unreachable = commit(client, layers.middleware.by_digest, only)  # the security suite alone: no download
    try:
        with pytest.raises(BuildError) as caught:
            pending_updates(client, unreachable)
    finally:
        client.images.remove(unreachable, force=True)
    assert "E: Failed to fetch http://127.0.0.1:1/debian-security" in caught.value.message
    assert caught.value.transient and "SHIPLINE_DEBIAN_SECURITY_MIRROR" in str(caught.value.hint)

    # So does an OS build: its upgrade step, on the root filesystem just built, unpacked again.
    root = tmp_path / "rootfs"
    root.mkdir()
    tarball = settings.home / "cache" / "rootfs" / f"debian-{version}.tar"
    subprocess.run(["tar", "-C", str(root), "-xf", str(tarball)], check=True)
    archive = DebianArchive.from_settings(settings)
    with pytest.raises(BuildError) as caught:
        _upgrade(root, "bookworm", DebianArchive(archive.mirror, UNREACHABLE, archive.keyring), print)
    assert (
        "apt-get upgrade of the bookworm root filesystem failed: E: Failed to fetch" in caught.value.message
    )
    assert "127.0.0.1:1" in caught.value.message
    assert caught.value.transient and "SHIPLINE_DEBIAN_SECURITY_MIRROR" in str(caught.value.hint)


def run(client: docker.DockerClient, image: str, script: str) -> str:
    """What ``script`` prints in a throw-away container of ``image``."""
    output = client.containers.run(image, ["sh", "-c", script], remove=True, network_mode="none")
    return bytes(output).decode()


def commit(client: docker.DockerClient, image: str, script: str) -> str:
    """A local image: ``image`` after ``script``; its id."""
    container = client.containers.run(image, ["sh", "-c", script], detach=True, network_mode="none")
    try:
        assert container.wait(timeout=60)["StatusCode"] == 0
        return str(container.commit().id)
    finally:
        container.remove(force=True)
