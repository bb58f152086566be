"""Which app images housekeeping deletes, read from a fake registry and decided from release records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shipline.build.registry import ImageManifest
from shipline.housekeeping.images import (
    AppImage,
    ImageDecision,
    count_bytes,
    delete_images,
    plan_images,
    read_registry,
    select_app_images,
)
from shipline.housekeeping.report import Action, Kind
from shipline.release.history import Release, ReleaseStatus
from tests.fake_registry import FakeRegistry, layer_digest

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def hours(n: float) -> datetime:
    return T0 + timedelta(hours=n)


def released(app: str, digest: str, *, env: str, number: int, status: ReleaseStatus, at: datetime) -> Release:
    return Release(
        app=app,
        env=env,
        number=number,
        status=status,
        image=f"registry.test:5000/apps/{app}",
        digest=digest,
        sha="f" * 40,
        created=at,
    )


def push_many(fake: FakeRegistry, app: str, count: int, *, base: str = "debian") -> list[str]:
    """``count`` images of ``app``, pushed an hour apart, on one base layer; digests oldest first."""
    return [
        fake.push(f"apps/{app}", f"sha{n}", created=hours(n), layers={base: 50_000, f"{app}-{n}": 1_000 + n})
        for n in range(count)
    ]


def deleted(decisions: list[ImageDecision]) -> set[str]:
    return {d.image.digest for d in decisions if d.delete}


def images_of(fake: FakeRegistry, app: str) -> list[AppImage]:
    with fake.registry().api(transport=fake.transport()) as api:
        return read_registry(api, apps=[app]).apps[app]


def test_live_recently_released_and_recently_pushed_images_stay_the_rest_go() -> None:
    fake = FakeRegistry()
    d = push_many(fake, "shop", 8)
    releases = [
        released("shop", d[0], env="prod", number=1, status=ReleaseStatus.LIVE, at=hours(10)),  # oldest image
        released("shop", d[1], env="pre", number=1, status=ReleaseStatus.SUPERSEDED, at=hours(11)),
        released("shop", d[2], env="pre", number=2, status=ReleaseStatus.SUPERSEDED, at=hours(12)),
        released("shop", d[3], env="pre", number=3, status=ReleaseStatus.LIVE, at=hours(13)),
    ]

    decisions = select_app_images(images_of(fake, "shop"), releases, keep=2)

    # keep 2: d0 live in prod; d3, d2 the newest that went live; d7, d6 the newest pushed.
    assert deleted(decisions) == {d[1], d[4], d[5]}
    reasons = {x.image.digest: x.reason for x in decisions}
    assert reasons[d[0]] == "live in prod release 1"
    assert reasons[d[2]] == "pre release 2 is among the 2 newest that went live"
    assert reasons[d[3]].startswith("live in pre release 3; pre release 3 is among the 2 newest")
    assert reasons[d[7]] == "among the 2 newest pushed (2026-10-01 07:00 UTC)"
    assert reasons[d[1]].startswith(
        "last released as pre release 1 (superseded), not among the 2 newest that went live;"
    )
    assert reasons[d[4]].startswith("never released; pushed 2026-10-01 04:00 UTC")


def test_a_digest_released_to_several_environments_counts_once_by_its_latest_release() -> None:
    fake = FakeRegistry()
    d = push_many(fake, "shop", 5)
    releases = [
        released("shop", d[0], env="pre", number=1, status=ReleaseStatus.SUPERSEDED, at=hours(10)),
        released("shop", d[1], env="pre", number=2, status=ReleaseStatus.SUPERSEDED, at=hours(11)),
        released("shop", d[0], env="prod", number=1, status=ReleaseStatus.SUPERSEDED, at=hours(12)),
        released("shop", d[2], env="pre", number=3, status=ReleaseStatus.SUPERSEDED, at=hours(13)),
    ]
    # The two newest that went live, by their latest release: d2 (13h), d0 (12h in prod); d1 goes.
    decisions = select_app_images(images_of(fake, "shop"), releases, keep=2)
    assert deleted(decisions) == {d[1]}


def test_failed_and_rolled_back_deploys_keep_nothing_but_a_deploy_under_way_does() -> None:
    fake = FakeRegistry()
    d = push_many(fake, "shop", 6)
    releases = [
        released("shop", d[0], env="pre", number=1, status=ReleaseStatus.FAILED, at=hours(10)),
        released("shop", d[1], env="pre", number=2, status=ReleaseStatus.ROLLED_BACK, at=hours(11)),
        released("shop", d[2], env="prod", number=1, status=ReleaseStatus.DEPLOYING, at=hours(12)),
        released("shop", d[3], env="prod", number=2, status=ReleaseStatus.RETIRED, at=hours(13)),
    ]
    decisions = select_app_images(images_of(fake, "shop"), releases, keep=1)
    assert deleted(decisions) == {d[0], d[1], d[3], d[4]}
    (deploying,) = [x for x in decisions if x.image.digest == d[2]]
    assert deploying.reason == "being deployed: prod release 1"


def test_images_of_other_apps_and_their_releases_do_not_count() -> None:
    fake = FakeRegistry()
    shop = push_many(fake, "shop", 3)
    push_many(fake, "cart", 3)
    releases = [released("cart", shop[0], env="prod", number=1, status=ReleaseStatus.LIVE, at=hours(9))]
    with fake.registry().api(transport=fake.transport()) as api:
        plan = plan_images(read_registry(api), releases, keep=1)
    assert sorted(plan.apps) == ["cart", "shop"]
    assert deleted(plan.apps["shop"]) == {shop[0], shop[1]}  # a release of cart does not hold shop's image
    assert plan.deletions == 4


def test_an_image_of_unknown_time_and_an_index_are_kept() -> None:
    fake = FakeRegistry()
    d = push_many(fake, "shop", 3)
    untimed = fake.push("apps/shop", "untimed", created=None, layers={"x": 1})
    images = images_of(fake, "shop")
    index = AppImage(
        app="shop",
        manifest=ImageManifest(
            repository="apps/shop",
            digest="sha256:" + "e" * 64,
            media_type="application/vnd.oci.image.index.v1+json",
            manifests=[d[0]],
        ),
        tags=["multi"],
        created=None,
    )
    decisions = select_app_images([*images, index], [], keep=1)
    assert deleted(decisions) == {d[0], d[1]}
    reasons = {x.image.digest: x.reason for x in decisions}
    assert reasons[untimed] == "its config tells no push time"
    assert reasons[index.digest] == "an image index: not collected"
    with pytest.raises(ValueError, match="at least the newest"):
        select_app_images(images, [], keep=0)


def test_only_app_repositories_are_read_and_tags_of_one_digest_are_one_image() -> None:
    fake = FakeRegistry()
    d = push_many(fake, "shop", 2)
    fake.tags["apps/shop"]["latest-build"] = d[1]
    middleware = fake.push(
        "shipline/middleware/python3", "3.11", created=hours(-5), layers={"debian": 50_000}
    )
    fake.push("apps/Not_An_App", "x", created=hours(1), layers={"y": 1})
    with fake.registry().api(transport=fake.transport()) as api:
        everything = read_registry(api)
        only_cart = read_registry(api, apps=["cart"])
    assert list(everything.apps) == ["shop"] and only_cart.apps == {}
    images = {i.digest: i for i in everything.apps["shop"]}
    assert images[d[1]].tags == ["latest-build", "sha1"] and images[d[0]].created == hours(0)
    assert layer_digest("debian") in everything.other_blobs and middleware not in images


def test_bytes_count_only_what_no_kept_image_references_each_blob_once() -> None:
    fake = FakeRegistry()
    fake.push("shipline/os/debian", "bookworm", created=hours(-9), layers={"debian": 50_000})
    old1 = fake.push("apps/shop", "a", created=hours(0), layers={"debian": 50_000, "old-mw": 7_000, "a": 300})
    old2 = fake.push("apps/shop", "b", created=hours(1), layers={"debian": 50_000, "old-mw": 7_000, "b": 200})
    new = fake.push("apps/shop", "c", created=hours(2), layers={"debian": 50_000, "mw": 9_000, "c": 100})
    with fake.registry().api(transport=fake.transport()) as api:
        plan = plan_images(read_registry(api), [], keep=1)
    sizes = {x.image.digest: x.bytes for x in plan.apps["shop"]}
    config = {
        x.image.digest: x.image.manifest.config.size for x in plan.apps["shop"] if x.image.manifest.config
    }
    assert sizes[old1] == config[old1] + 7_000 + 300  # the old middleware layer counted at its first image
    assert sizes[old2] == config[old2] + 200
    assert sizes[new] == config[new] + 50_000 + 9_000 + 100  # a kept image: its whole size

    plan.apps["shop"][0].delete = False  # were the oldest kept, its layers would free nothing more
    count_bytes(plan.apps, set())
    assert plan.apps["shop"][1].bytes == config[old2] + 200


def test_deletes_go_by_digest_take_the_tags_and_are_logged() -> None:
    fake = FakeRegistry()
    d = push_many(fake, "shop", 4)
    base = fake.push("shipline/os/debian", "bookworm", created=hours(-9), layers={"debian": 50_000})
    with fake.registry().api(transport=fake.transport()) as api:
        plan = plan_images(read_registry(api), [], keep=2)
        lines: list[str] = []
        dry = delete_images(api, plan.apps["shop"], releases_now=[], keep=2, dry_run=True, log=lines.append)
        assert fake.deleted == [] and lines == []
        assert [i.action for i in dry] == [Action.WOULD_REMOVE] * 2 + [Action.KEPT] * 2

        items = delete_images(
            api, plan.apps["shop"], releases_now=[], keep=2, dry_run=False, log=lines.append
        )

    assert fake.deleted == [("apps/shop", d[0]), ("apps/shop", d[1])]
    assert fake.tags_of("apps/shop") == {"sha2": d[2], "sha3": d[3]}
    assert fake.digests_of("shipline/os/debian") == {base}
    assert [(i.kind, i.name, i.action) for i in items] == [
        (Kind.IMAGE, f"apps/shop@{digest}", action)
        for digest, action in zip(d, [Action.REMOVED] * 2 + [Action.KEPT] * 2, strict=True)
    ]
    assert items[0].reason.startswith("tags sha0: never released;") and items[0].bytes > 1_000
    why = plan.apps["shop"][0].reason
    assert lines[0] == f"deleted apps/shop@{d[0]} (sha0; {items[0].bytes} bytes to reclaim): {why}"


def test_a_release_that_takes_a_planned_image_meanwhile_keeps_it() -> None:
    fake = FakeRegistry()
    d = push_many(fake, "shop", 4)
    with fake.registry().api(transport=fake.transport()) as api:
        plan = plan_images(read_registry(api), [], keep=2)
        rollback = released("shop", d[0], env="prod", number=7, status=ReleaseStatus.DEPLOYING, at=hours(20))
        items = delete_images(
            api, plan.apps["shop"], releases_now=[rollback], keep=2, dry_run=False, log=print
        )
    assert fake.deleted == [("apps/shop", d[1])]
    assert items[0].action is Action.KEPT
    assert (
        items[0].reason
        == "tags sha0: kept after all, a release took it meanwhile: being deployed: prod release 7"
    )


def test_a_refused_delete_is_a_failed_row_and_one_already_gone_frees_nothing() -> None:
    fake = FakeRegistry()
    d = push_many(fake, "shop", 3)
    with fake.registry().api(transport=fake.transport()) as api:
        plan = plan_images(read_registry(api), [], keep=1)
        fake.manifests["apps/shop"].pop(d[0])  # someone deleted it already
        fake.deletes_enabled = False
        lines: list[str] = []
        items = delete_images(
            api, plan.apps["shop"], releases_now=[], keep=1, dry_run=False, log=lines.append
        )
    gone, refused, kept = items
    assert gone.action is Action.REMOVED and gone.bytes == 0 and gone.reason.endswith("it was gone already")
    assert refused.action is Action.FAILED and "answered 405" in refused.reason
    assert kept.action is Action.KEPT
    assert lines[1].startswith(f"could not delete apps/shop@{d[1]}: registry registry.test:5000 answered 405")
