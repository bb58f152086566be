"""The road to an environment: a digest reaches PROD only after it went live in PRE (the block's rule)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from blocks.environment import ShiplineEnvironment
from shipline.errors import ConfigError, ReleaseError
from shipline.release.history import Release, ReleaseStatus
from shipline.release.road import check_road, required_before

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def release(number: int, digest: str, status: ReleaseStatus) -> Release:
    return Release(
        app="shop",
        env="pre",
        number=number,
        digest=digest,
        image="127.0.0.1:5000/apps/shop",
        sha="c" * 40,
        status=status,
        created=datetime(2026, 11, 1, tzinfo=UTC),
    )


def histories(**by_env: list[Release]) -> Callable[[str], list[Release]]:
    return lambda env: by_env.get(env, [])


def test_prod_requires_pre_unless_the_block_says_otherwise() -> None:
    assert required_before("prod", None) == ["pre"]
    assert required_before("pre", None) == []
    assert required_before("prod", []) == []
    assert required_before("staging", ["pre", "qa"]) == ["pre", "qa"]


@pytest.mark.parametrize("status", [ReleaseStatus.LIVE, ReleaseStatus.SUPERSEDED])
def test_a_digest_that_went_live_in_pre_may_go_to_prod(status: ReleaseStatus) -> None:
    pre = [release(1, B, ReleaseStatus.SUPERSEDED), release(2, A, status), release(3, B, ReleaseStatus.LIVE)]
    passed = check_road(app="shop", env="prod", digest=A, required=["pre"], history=histories(pre=pre))
    assert passed == [2]


@pytest.mark.parametrize(
    "pre",
    [
        [],
        [release(1, A, ReleaseStatus.ROLLED_BACK), release(2, A, ReleaseStatus.FAILED)],
        [release(1, A, ReleaseStatus.DEPLOYING), release(2, B, ReleaseStatus.LIVE)],
    ],
    ids=["never", "only-failed", "still-deploying"],
)
def test_a_digest_that_never_went_live_in_pre_is_refused_with_the_rule(pre: list[Release]) -> None:
    with pytest.raises(ReleaseError, match="has not passed pre: prod takes only a digest") as refused:
        check_road(app="shop", env="prod", digest=A, required=["pre"], history=histories(pre=pre))
    assert refused.value.hint is not None and "shipline-environment/prod" in refused.value.hint


def test_the_block_names_environments_only() -> None:
    with pytest.raises((ConfigError, ValueError)):
        ShiplineEnvironment(work_pool="prod", requires_passed=["pre; drop"])
    assert ShiplineEnvironment(work_pool="prod").requires_passed is None
