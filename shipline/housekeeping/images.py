"""App images that no release needs any more, deleted from the registry by digest.

Only ``apps/{app}`` repositories are looked at; base images (``shipline/os/*``, ``shipline/middleware/*``)
and any other repository are never touched. Of an app's images (its manifests, each with its tags) these
stay, and every other is deleted by digest, with its tags:

- every digest **live** in an environment, or **being deployed** (release records in etcd);
- the digests of the app's **newest N releases that went live** (live or superseded since, in any
  environment, newest first by the time of their latest release): ``shipline rollback`` to any of them
  finds its image. Failed and rolled-back deploys do not count: nothing rolls back to them;
- the **newest N images pushed**, by the ``created`` time of each image's config (an image is pushed as it
  is built; the Distribution API keeps no push time of its own), so a build that is about to be released,
  or one built for a merge request, stays;
- an image whose config says no time, and an image index (Shipline pushes neither), as they are.

A release may take an old digest while a run goes on (``shipline rollback --to 3``): right before an app's
manifests are deleted its release records are read again and its images selected again, and only what both
selections delete goes. An image pushed after the registry was read is not in the plan at all.

The registry frees the space of a deleted manifest's blobs only in its blob collection (offline: see
``shipline.stack.registry_maintenance``). The bytes counted for a deleted image are those of its blobs that
no kept image references (kept app images, base images, and anything else tagged in the registry), each
blob counted once.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from pydantic import BaseModel

from shipline.build.registry import ImageManifest, RegistryAPI
from shipline.errors import ShiplineError
from shipline.housekeeping.report import Action, Item, Kind
from shipline.names import NAME_PATTERN
from shipline.release.history import Release, ReleaseStatus

APPS = "apps/"
"""Prefix of the repositories housekeeping deletes from; every other repository is left alone."""
_WENT_LIVE = {ReleaseStatus.LIVE, ReleaseStatus.SUPERSEDED}
READERS = 8
"""Repositories read at once."""

Log = Callable[[str], None]


class AppImage(BaseModel):
    """One manifest of an app's repository: its tags, when it was made, the blobs it references."""

    app: str
    manifest: ImageManifest
    tags: list[str]
    created: datetime | None

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def name(self) -> str:
        return f"{self.manifest.repository}@{self.digest}"


class ImageDecision(BaseModel):
    """An image, whether it is deleted, why, and its bytes (freed if deleted, its size if kept)."""

    image: AppImage
    delete: bool
    reason: str
    bytes: int = 0


class RegistryContents(BaseModel):
    """What a run read from the registry."""

    apps: dict[str, list[AppImage]]
    other_blobs: set[str]
    """Blobs of the tagged manifests of every repository that is not an app's (base images …)."""


class ImagePlan(BaseModel):
    """What a run deletes and keeps, app by app."""

    keep: int
    apps: dict[str, list[ImageDecision]]

    @property
    def deletions(self) -> int:
        return sum(d.delete for decisions in self.apps.values() for d in decisions)

    def apps_with_deletions(self) -> dict[str, list[ImageDecision]]:
        """The apps that have an image to delete, with all their decisions."""
        return {app: ds for app, ds in self.apps.items() if any(d.delete for d in ds)}

    def rows_of_untouched_apps(self) -> list[Item]:
        """The rows of the apps whose every image stays."""
        touched = self.apps_with_deletions()
        return [
            image_row(d.image, Action.KEPT, d.reason, d.bytes)
            for app, decisions in self.apps.items()
            if app not in touched
            for d in decisions
        ]


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "at an unknown time"


def _release_names(releases: Sequence[Release]) -> str:
    return ", ".join(f"{r.env} release {r.number}" for r in releases)


def select_app_images(
    images: Sequence[AppImage], releases: Sequence[Release], *, keep: int
) -> list[ImageDecision]:
    """Decide which of one app's images are deleted (see the module's docstring).

    Args:
        images: The app's images in the registry.
        releases: The app's release records, in every environment.
        keep: N: how many of the newest released and of the newest pushed images stay (at least 1).

    Returns:
        One decision per image, in the order given (bytes not yet counted).
    """
    if keep < 1:
        raise ValueError("at least the newest image of each app is kept")
    live = [r for r in releases if r.status is ReleaseStatus.LIVE]
    deploying = [r for r in releases if r.status is ReleaseStatus.DEPLOYING]
    latest: dict[str, Release] = {}
    for release in sorted((r for r in releases if r.status in _WENT_LIVE), key=lambda r: r.created):
        latest[release.digest] = release  # the newest release of each digest
    newest_released = sorted(latest, key=lambda digest: latest[digest].created, reverse=True)[:keep]
    dated = sorted((i for i in images if i.created), key=lambda i: (i.created, i.digest), reverse=True)
    newest_pushed = {i.digest for i in dated[:keep]}
    by_time = sorted((r for r in releases if r.status is not ReleaseStatus.RETIRED), key=lambda r: r.created)
    ever_released = {r.digest: r for r in by_time}  # the newest release of each digest

    decisions = []
    for image in images:
        digest = image.digest
        keeping = []
        if mine := [r for r in live if r.digest == digest]:
            keeping.append(f"live in {_release_names(mine)}")
        if mine := [r for r in deploying if r.digest == digest]:
            keeping.append(f"being deployed: {_release_names(mine)}")
        if digest in newest_released:
            keeping.append(f"{_release_names([latest[digest]])} is among the {keep} newest that went live")
        if digest in newest_pushed:
            keeping.append(f"among the {keep} newest pushed ({_when(image.created)})")
        if image.manifest.is_index:
            keeping.append("an image index: not collected")
        if image.created is None and not image.manifest.is_index:
            keeping.append("its config tells no push time")
        if keeping:
            decisions.append(ImageDecision(image=image, delete=False, reason="; ".join(keeping)))
            continue
        if (last := ever_released.get(digest)) is not None:
            why = (
                f"last released as {_release_names([last])} ({last.status}), "
                f"not among the {keep} newest that went live"
            )
        else:
            why = "never released"
        reason = f"{why}; pushed {_when(image.created)}, not among the {keep} newest pushed"
        decisions.append(ImageDecision(image=image, delete=True, reason=reason))
    return decisions


def count_bytes(plan: dict[str, list[ImageDecision]], other_blobs: Collection[str]) -> None:
    """Give each decision its bytes: a kept image its size, a deleted one the blobs only deleted images
    reference (each counted once, at the first deleted image that references it)."""
    kept = set(other_blobs)
    for decisions in plan.values():
        for decision in decisions:
            if not decision.delete:
                kept |= {blob.digest for blob in decision.image.manifest.blobs}
    counted: set[str] = set()
    for decisions in plan.values():
        for decision in decisions:
            blobs = decision.image.manifest.blobs
            if not decision.delete:
                decision.bytes = sum(blob.size for blob in blobs)
                continue
            freed = {b.digest: b.size for b in blobs if b.digest not in kept and b.digest not in counted}
            counted |= set(freed)
            decision.bytes = sum(freed.values())


def _app_of(repository: str) -> str | None:
    app = repository.removeprefix(APPS)
    return app if repository.startswith(APPS) and NAME_PATTERN.fullmatch(app) else None


def _images(api: RegistryAPI, repository: str) -> list[tuple[ImageManifest, list[str]]]:
    """The repository's tagged manifests, each with its tags."""
    by_digest: dict[str, tuple[ImageManifest, list[str]]] = {}
    for tag in api.tags(repository):
        manifest = api.manifest(repository, tag)
        if manifest is None:  # untagged meanwhile
            continue
        by_digest.setdefault(manifest.digest, (manifest, []))[1].append(tag)
    return list(by_digest.values())


def _app_images(api: RegistryAPI, repository: str, app: str | None) -> list[AppImage]:
    """The images of one repository (for another repository than an app's, without their times)."""
    return [
        AppImage(
            app=app or "",
            manifest=manifest,
            tags=sorted(tags),
            created=api.image_created(manifest) if app is not None else None,
        )
        for manifest, tags in _images(api, repository)
    ]


def read_registry(api: RegistryAPI, *, apps: Collection[str] | None = None) -> RegistryContents:
    """Read every app's images (or only those of ``apps``) and the blobs other repositories reference.

    Repositories are read a few at a time (each is a tag list, a manifest per tag and a config per image).

    Raises:
        ServiceUnavailableError, RegistryError: the registry does not answer, or refuses a read.
    """
    chosen = {}
    for repository in api.repositories():
        app = _app_of(repository)
        if app is None or apps is None or app in apps:
            chosen[repository] = app
    with ThreadPoolExecutor(max_workers=READERS) as pool:
        read = dict(zip(chosen, pool.map(lambda r: _app_images(api, r, chosen[r]), chosen), strict=True))
    found = {app: read[repository] for repository, app in chosen.items() if app is not None}
    other_blobs = {
        blob.digest
        for repository, app in chosen.items()
        if app is None
        for image in read[repository]
        for blob in image.manifest.blobs
    }
    return RegistryContents(apps=found, other_blobs=other_blobs)


def plan_images(contents: RegistryContents, releases: Sequence[Release], *, keep: int) -> ImagePlan:
    """Decide, app by app, which images are deleted, and count the bytes of each."""
    plan = {
        app: select_app_images(images, [r for r in releases if r.app == app], keep=keep)
        for app, images in sorted(contents.apps.items())
    }
    count_bytes(plan, contents.other_blobs)
    return ImagePlan(keep=keep, apps=plan)


def image_row(image: AppImage, action: Action, reason: str, size: int) -> Item:
    """The table's row of an image: its tags lead the reason."""
    tags = f"tags {', '.join(image.tags)}" if image.tags else "no tag"
    return Item(kind=Kind.IMAGE, name=image.name, action=action, reason=f"{tags}: {reason}", bytes=size)


def delete_images(
    api: RegistryAPI,
    decisions: Sequence[ImageDecision],
    *,
    releases_now: Sequence[Release],
    keep: int,
    dry_run: bool,
    log: Log,
) -> list[Item]:
    """Delete the images of one app decided on, unless its releases read again keep one now.

    Args:
        api: The registry.
        decisions: The plan's decisions for the app's images.
        releases_now: The app's release records, read again just now.
        keep: N, as planned.
        dry_run: Delete nothing; say what would go.
        log: Receives one line per deletion.

    Returns:
        One row per image: deleted, kept (and why), or failed with the registry's answer.
    """
    again = select_app_images([d.image for d in decisions], releases_now, keep=keep)
    still = {d.image.digest: d for d in again}
    items = []
    for decision in decisions:
        image = decision.image
        action, reason, size = Action.KEPT, decision.reason, decision.bytes
        if decision.delete and still[image.digest].delete is False:
            reason = f"kept after all, a release took it meanwhile: {still[image.digest].reason}"
        elif decision.delete and dry_run:
            action = Action.WOULD_REMOVE
        elif decision.delete:
            try:
                deleted = api.delete_manifest(image.manifest.repository, image.digest)
            except ShiplineError as exc:
                action, reason = Action.FAILED, f"{reason}; deleting it failed: {exc.message}"
                log(f"could not delete {image.name}: {exc.message}")
            else:
                action = Action.REMOVED
                if not deleted:
                    reason, size = f"{reason}; it was gone already", 0
                log(f"deleted {image.name} ({', '.join(image.tags)}; {size} bytes to reclaim): {reason}")
        tags = f"tags {', '.join(image.tags)}" if image.tags else "no tag"
        items.append(
            Item(kind=Kind.IMAGE, name=image.name, action=action, reason=f"{tags}: {reason}", bytes=size)
        )
    return items
