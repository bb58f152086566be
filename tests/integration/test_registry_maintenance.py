"""The registry's blob collection, on a registry of this test's own (a home and a port of its own): the
stack's shared registry is never stopped by a test.

Two images share a layer; one is deleted through the API; the collection frees its own layer and config,
keeps the shared layer and the other image whole, refuses pushes while it runs, and leaves the registry
taking pushes again under a new process record.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from shipline.build.registry import Registry as ImageRegistry
from shipline.config import Settings
from shipline.errors import StackError
from shipline.stack.components import Registry
from shipline.stack.lifecycle import start_missing
from shipline.stack.processes import ProcessTable
from shipline.stack.registry_maintenance import collect_blob_space, managed_registry
from tests.images import free_ports

MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def own_registry(tmp_path: Path) -> Iterator[Settings]:
    """A registry started the way `shipline up` starts the stack's, in a home of this test; stopped after."""
    (port,) = free_ports(1)
    settings = Settings(home=tmp_path / "home", registry_port=port)
    table = ProcessTable(settings.run_dir)
    start_missing([Registry(settings)], table, report=print)
    yield settings
    table.stop("registry", timeout=10)


def upload_blob(client: httpx.Client, repository: str, data: bytes) -> str:
    started = client.post(f"/v2/{repository}/blobs/uploads/")
    assert started.status_code == 202, started.text
    digest = digest_of(data)
    location = started.headers["Location"]  # carries the upload's state in its query
    done = client.put(f"{location}{'&' if '?' in location else '?'}digest={digest}", content=data)
    assert done.status_code == 201, done.text
    return digest


def push_image(client: httpx.Client, repository: str, tag: str, layers: list[bytes]) -> tuple[str, list[str]]:
    """Push an image with ``layers``; return its manifest digest and its blobs (config first)."""
    config = json.dumps({"created": "2026-11-25T12:00:00Z", "tag": tag}).encode()
    blobs = [upload_blob(client, repository, config)] + [upload_blob(client, repository, x) for x in layers]
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": len(config),
                "digest": blobs[0],
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(x),
                    "digest": d,
                }
                for x, d in zip(layers, blobs[1:], strict=True)
            ],
        }
    ).encode()
    put = client.put(
        f"/v2/{repository}/manifests/{tag}", content=manifest, headers={"Content-Type": MANIFEST}
    )
    assert put.status_code == 201, put.text
    return put.headers["Docker-Content-Digest"], blobs


def test_deleted_images_lose_their_own_blobs_and_pushes_wait_meanwhile(own_registry: Settings) -> None:
    settings = own_registry
    base = b"shared base layer " * 4000
    login = ImageRegistry.of_stack(settings).basic_auth()
    with httpx.Client(
        base_url=f"http://{settings.registry_address}", auth=login, trust_env=False, timeout=10
    ) as client:
        old, old_blobs = push_image(client, "apps/gc", "old", [base, b"old app layer " * 20000])
        new, new_blobs = push_image(client, "apps/gc", "new", [base, b"new app layer " * 100])
        assert client.delete(f"/v2/apps/gc/manifests/{old}").status_code == 202
        original_record = ProcessTable(settings.run_dir).running("registry")
        assert original_record is not None and managed_registry(settings)

        refused: list[int] = []

        def report(line: str) -> None:
            """Progress lines; once the registry answers read-only, a push is tried."""
            storage = yaml.safe_load(Registry(settings).config_path.read_text())["storage"]
            if "up after" in line and "maintenance" in storage:
                refused.append(client.post("/v2/apps/gc/blobs/uploads/").status_code)

        dry = collect_blob_space(settings, dry_run=True, report=report)
        # The old manifest itself, its config and its own layer; a dry run deletes nothing and stops nothing.
        assert (dry.blobs_deleted, dry.freed, dry.read_only_seconds) == (3, 0, 0)
        assert client.get(f"/v2/apps/gc/blobs/{old_blobs[2]}").status_code == 200  # a dry run deletes nothing

        done = collect_blob_space(settings, report=report)

        assert refused and all(code >= 400 for code in refused)  # read-only while it collected
        assert done.blobs_deleted == 3
        assert done.freed >= len(b"old app layer " * 20000)
        for blob in [old, old_blobs[0], old_blobs[2]]:
            assert client.get(f"/v2/apps/gc/blobs/{blob}").status_code == 404, blob
        for blob in new_blobs:  # the shared layer, and the kept image whole
            assert client.get(f"/v2/apps/gc/blobs/{blob}").status_code == 200, blob
        kept = client.get("/v2/apps/gc/manifests/new", headers={"Accept": MANIFEST})
        assert kept.headers["Docker-Content-Digest"] == new
        # Pushes again, from a registry process of its own record, with its usual configuration.
        push_image(client, "apps/gc", "after", [b"after " * 10])
    record = ProcessTable(settings.run_dir).running("registry")
    assert record is not None and record.pid != original_record.pid
    assert "maintenance" not in yaml.safe_load(Registry(settings).config_path.read_text())["storage"]


def test_a_registry_this_host_did_not_start_is_left_to_its_operator(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    settings = Settings(home=tmp_path / "home", registry_port=port)
    assert not managed_registry(settings)
    with pytest.raises(StackError, match="not started by `shipline up` on this host") as refused:
        collect_blob_space(settings, report=print)
    assert (
        refused.value.hint and "garbage-collect" in refused.value.hint and "read-only" in refused.value.hint
    )
