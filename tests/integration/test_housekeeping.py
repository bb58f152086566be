"""Housekeeping on the real registry, etcd and Prefect: images of a test app pushed and released, workspaces
and release directories with old times in a home of the test's own.

Every test names its own app and deletes only what it made (its images, its release records, its flow
runs); the images of other apps are never read, let alone deleted (each run is limited to the test's app),
and no blob collection runs here: that one stops the registry, so it is tested on a registry of its own
(``test_registry_maintenance.py``).

These tests need Docker, etcd, the registry and Prefect's API, and nothing Prefect is provisioned with (no
work pool, deployment or block document): the fixture starts what does not answer and leaves Prefect's
provisioning alone, so a run from a checkout never applies its deployments to a stack another checkout
provisioned.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from docker.errors import ImageNotFound
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
from prefect.states import Completed, Running

from blocks.housekeeping import ShiplineHousekeeping
from blocks.registry import ShiplineRegistry
from flows.housekeeping import housekeeping
from shipline.build.registry import Registry
from shipline.config import Settings, load_settings
from shipline.docker import docker_client
from shipline.errors import ShiplineError
from shipline.etcd_client import connect
from shipline.housekeeping.policy import HousekeepingPolicy
from shipline.housekeeping.report import Action, Kind
from shipline.housekeeping.sweep import housekeep
from shipline.release.history import ReleaseStatus, record_release, set_status
from shipline.stack.lifecycle import all_components, down, up
from tests.images import busybox_web_image

MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
)


@pytest.fixture(scope="module")
def stack() -> Iterator[Settings]:
    """Docker, etcd, the registry and Prefect's server, answering; stopped at the end only if started here."""
    settings = load_settings()
    needed = {"docker", "etcd", "registry", "prefect"}
    try:
        result = up(settings, only=needed, provision=lambda s, r: False, report=print)
    except ShiplineError as exc:
        pytest.fail(f"the local stack did not come up: {exc.message}\nhint: {exc.hint}", pytrace=False)
    yield settings
    if result.started and not os.environ.get("SHIPLINE_KEEP_STACK"):
        down(settings, components=[c for c in all_components(settings) if c.name in result.started])


@pytest.fixture
def app(stack: Settings) -> Iterator[str]:
    """An app of this test: its images, release records and local images go afterwards."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    yield name
    asyncio.run(forget_releases(stack, name))
    registry = Registry.of_stack(stack)
    with registry.api() as api:
        for tag in api.tags(f"apps/{name}"):
            manifest = api.manifest(f"apps/{name}", tag)
            if manifest is not None:
                api.delete_manifest(f"apps/{name}", manifest.digest)
    client = docker_client(stack.docker_url)
    for image in client.images.list(name=registry.app_repository(name)):
        with contextlib.suppress(ImageNotFound):
            client.images.remove(image.id, force=True)


async def forget_releases(settings: Settings, app: str) -> None:
    async with connect(settings.etcd_url) as etcd:
        await etcd.delete_prefix(f"/shipline/releases/{app}/".encode())


def record(settings: Settings, app: str, env: str, digest: str, status: ReleaseStatus) -> int:
    """A release of ``digest`` in ``env`` recorded as a release flow records it; its number."""

    async def write() -> int:
        async with connect(settings.etcd_url) as etcd:
            release = await record_release(
                etcd,
                app=app,
                env=env,
                image=f"{settings.registry_address}/apps/{app}",
                digest=digest,
                sha="a" * 40,
            )
            await set_status(etcd, release, status)
            return release.number

    return asyncio.run(write())


def manifest_status(settings: Settings, app: str, reference: str) -> int:
    response = httpx.head(
        f"http://{settings.registry_address}/v2/apps/{app}/manifests/{reference}",
        headers={"Accept": MANIFEST_TYPES},
        auth=Registry.of_stack(settings).basic_auth(),
        trust_env=False,
    )
    return response.status_code


def policy(**changes: Any) -> HousekeepingPolicy:
    """The block's defaults with ``changes``; never a blob collection (it would stop the shared registry)."""
    return ShiplineHousekeeping().policy().model_copy(update={"reclaim_blob_space": False, **changes})


def test_images_no_release_needs_are_deleted_and_the_live_one_stays(
    stack: Settings, app: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = docker_client(stack.docker_url)
    repository = Registry.of_stack(stack).app_repository(app)
    digests = [
        busybox_web_image(client, repository, f"v{n}", {"index.html": f"{app} build {n}\n"}) for n in range(6)
    ]
    record(stack, app, "prod", digests[0], ReleaseStatus.LIVE)  # the oldest image is live in PROD
    record(stack, app, "pre", digests[1], ReleaseStatus.FAILED)  # never went live
    record(stack, app, "pre", digests[2], ReleaseStatus.SUPERSEDED)
    record(stack, app, "pre", digests[3], ReleaseStatus.SUPERSEDED)
    record(stack, app, "pre", digests[4], ReleaseStatus.LIVE)
    # Keep 2: v0 live; v4, v3 the newest that went live; v5, v4 the newest pushed. v1 and v2 go.
    doomed = {digests[1], digests[2]}
    registry = Registry.of_stack(stack)
    home = Settings(home=tmp_path / "home")

    dry = housekeep(home, policy(keep_images_per_app=2, dry_run=True), registry, apps=[app], log=print)

    images = {item.name.rsplit("@", 1)[1]: item for item in dry if item.kind is Kind.IMAGE}
    assert set(images) == set(digests)
    assert {d for d, item in images.items() if item.action is Action.WOULD_REMOVE} == doomed
    assert all(manifest_status(stack, app, d) == 200 for d in digests)  # a dry run deletes nothing

    # The nightly flow, run here with the same settings but for real, limited to this test's app.
    monkeypatch.setenv("SHIPLINE_HOME", str(tmp_path / "home"))
    # …whose etcd is still the stack's, reached with the stack's credentials.
    monkeypatch.setenv("SHIPLINE_ETCD_CREDENTIALS_FILE", str(stack.etcd_credentials_path))
    monkeypatch.setattr(
        ShiplineHousekeeping,
        "current",
        classmethod(lambda cls: cls(keep_images_per_app=2, reclaim_blob_space=False)),
    )
    monkeypatch.setattr(
        ShiplineRegistry,
        "current",
        classmethod(lambda cls: cls(**Registry.of_stack(stack).model_dump(exclude={"insecure"}))),
    )
    state = housekeeping(apps=[app], return_state=True)

    assert state.is_completed(), state.message
    for n, digest in enumerate(digests):
        expected = 404 if digest in doomed else 200
        assert manifest_status(stack, app, digest) == expected, f"v{n}"
        assert manifest_status(stack, app, f"v{n}") == expected, f"the tag v{n}"
    with registry.api() as api:
        assert sorted(api.tags(f"apps/{app}")) == ["v0", "v3", "v4", "v5"]
    items = state.result()
    removed = [item for item in items if item.action is Action.REMOVED]
    assert {item.name.rsplit("@", 1)[1] for item in removed} == doomed
    assert all(item.bytes > 0 for item in removed)  # each held a layer of its own
    (blob_space,) = [item for item in items if item.kind is Kind.BLOB_SPACE]
    assert blob_space.action is Action.KEPT and "reclaim_blob_space is off" in blob_space.reason

    with get_client(sync_client=True) as prefect:
        (artifact,) = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["housekeeping"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
            )
        )
    assert artifact.description and "2 of 6 images removed" in artifact.description
    data = artifact.data
    rows: list[dict[str, Any]] = json.loads(data) if isinstance(data, str) else data  # type: ignore[assignment]
    assert {row["name"] for row in rows if row["action"] == "removed"} == {f"apps/{app}@{d}" for d in doomed}


@flow(name="housekeeping-test-delivery")
def a_delivery() -> None:
    """Stands for a delivery whose run names a workspace."""


def make_tree(path: Path, *, days_old: float) -> Path:
    """A directory with a file, all of it last written ``days_old`` days ago."""
    path.mkdir(parents=True)
    (path / "docker-compose.yml").write_text("services: {}\n")
    moment = (datetime.now(UTC) - timedelta(days=days_old)).timestamp()
    os.utime(path / "docker-compose.yml", (moment, moment))
    os.utime(path, (moment, moment))
    return path


@pytest.fixture
def flow_runs(stack: Settings) -> Iterator[dict[str, str]]:
    """Two flow runs of this test in Prefect, one running and one completed, by state; deleted after."""
    with get_client(sync_client=True) as prefect:
        running = prefect.create_flow_run(a_delivery, state=Running())
        done = prefect.create_flow_run(a_delivery, state=Completed())
        yield {"running": str(running.id), "done": str(done.id)}
        for run in (running, done):
            prefect.delete_flow_run(run.id)


def test_old_workspaces_and_release_dirs_go_those_in_use_or_live_stay(
    stack: Settings, app: str, tmp_path: Path, flow_runs: dict[str, str]
) -> None:
    home = Settings(home=tmp_path / "home")
    unknown_old, unknown_young = str(uuid.uuid4()), str(uuid.uuid4())
    make_tree(home.workspaces_dir / flow_runs["running"], days_old=10)  # a delivery still going on
    make_tree(home.workspaces_dir / flow_runs["done"], days_old=10)
    make_tree(home.workspaces_dir / unknown_old, days_old=10)  # no such run: age alone
    make_tree(home.workspaces_dir / unknown_young, days_old=1)
    digest = "sha256:" + "c" * 64
    superseded = record(stack, app, "prod", digest, ReleaseStatus.SUPERSEDED)
    live = record(stack, app, "prod", digest, ReleaseStatus.LIVE)
    rolled_back = record(stack, app, "pre", digest, ReleaseStatus.ROLLED_BACK)
    releases = home.releases_dir / app
    make_tree(releases / "prod" / str(superseded), days_old=40)
    make_tree(releases / "prod" / str(live), days_old=40)
    make_tree(releases / "pre" / str(rolled_back), days_old=5)
    make_tree(releases / "pre" / "99", days_old=40)  # no record

    items = housekeep(home, policy(), Registry.of_stack(stack), apps=[app], log=print)

    assert {p.name for p in home.workspaces_dir.iterdir()} == {flow_runs["running"], unknown_young}
    assert {str(p.relative_to(releases)) for p in releases.glob("*/*")} == {
        f"prod/{live}",
        f"pre/{rolled_back}",
    }
    rows = {item.name: item for item in items}
    assert rows[f"workspaces/{flow_runs['running']}"].reason.startswith("in use: its delivery run is Running")
    assert rows[f"releases/{app}/prod/{live}"].reason == f"release {live} is live in prod"
    assert rows[f"workspaces/{flow_runs['done']}"].action is Action.REMOVED
    assert rows[f"releases/{app}/pre/99"].reason.endswith("no release record")
    assert not [item for item in items if item.action is Action.FAILED]
