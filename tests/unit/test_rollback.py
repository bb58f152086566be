from typing import Any

import pytest

from shipline.errors import ReleaseError
from shipline.release.history import Release, ReleaseStatus
from shipline.release.lifecycle import release_as_shown, replay_request, rollback_target

REQUEST = {
    "app": "shop",
    "env": "prod",
    "image": "r/apps/shop",
    "digest": "sha256:" + "1" * 64,
    "sha": "a" * 40,
}


def history(*statuses: ReleaseStatus, request: dict[str, Any] | None = None) -> list[Release]:
    return [
        Release(
            number=n,
            app="shop",
            env="prod",
            image="r/apps/shop",
            digest=f"sha256:{n:064d}",
            sha="a" * 40,
            status=s,
            request=request if request is not None else {**REQUEST, "digest": f"sha256:{n:064d}"},
        )
        for n, s in enumerate(statuses, start=1)
    ]


def test_default_target_is_the_last_good_release_before_the_live_one() -> None:
    S = ReleaseStatus
    releases = history(S.SUPERSEDED, S.SUPERSEDED, S.ROLLED_BACK, S.LIVE)
    target = rollback_target(releases, to=None)
    assert target.number == 2
    assert replay_request(target).digest == f"sha256:{2:064d}"


def test_explicit_target() -> None:
    releases = history(ReleaseStatus.SUPERSEDED, ReleaseStatus.LIVE)
    assert rollback_target(releases, to=1).number == 1
    with pytest.raises(ReleaseError, match="has no release 9"):
        rollback_target(releases, to=9)


def test_nothing_to_go_back_to() -> None:
    with pytest.raises(ReleaseError, match="no release to roll back to"):
        rollback_target([], to=None)
    with pytest.raises(ReleaseError, match="no good release before release 2"):
        rollback_target(history(ReleaseStatus.FAILED, ReleaseStatus.LIVE), to=None)
    with pytest.raises(ReleaseError, match="recorded no request"):
        rollback_target(history(ReleaseStatus.SUPERSEDED, ReleaseStatus.LIVE, request={}), to=None)


def test_a_release_recorded_before_the_one_service_model_replays_with_its_settings() -> None:
    legacy = {
        **REQUEST,
        "service": {"replicas": 2, "environment": {"GREETING": "hi"}, "command": [], "health_path": "/up"},
    }
    (target,) = history(ReleaseStatus.LIVE, request=legacy)
    replayed = replay_request(target)
    assert replayed.replicas(default=1) == 2
    assert replayed.settings.environment == {"GREETING": "hi"}
    assert replayed.service.health_path == "/up"


def test_a_release_with_secrets_replays_its_references_and_its_plain_values() -> None:
    # The record keeps what a redeploy needs: the block's name (its value is read again at deploy time)
    # and the spec's plain values, which are masked only where people read the release.
    service = {
        "environments": {
            "prod": {
                "environment": {
                    "DB_PASSWORD": {"secret": "shop-db"},
                    "API_TOKEN": "plain-token",
                    "GREETING": "hi",
                }
            }
        }
    }
    (target,) = history(ReleaseStatus.LIVE, request={**REQUEST, "service": service})
    replayed = replay_request(target)
    assert replayed.settings.secrets == {"DB_PASSWORD": "shop-db"}
    assert replayed.settings.environment["API_TOKEN"] == "plain-token"
    shown = release_as_shown(target)["request"]["service"]["environments"]["prod"]["environment"]
    assert shown == {"DB_PASSWORD": {"secret": "shop-db"}, "API_TOKEN": "****", "GREETING": "hi"}
    assert target.request["service"]["environments"]["prod"]["environment"]["API_TOKEN"] == "plain-token"
