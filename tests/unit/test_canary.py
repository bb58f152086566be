"""The canary's pieces without services: the spec, discover's weighted routes, nginx's counts and the judge.

The Lua side and the analysis against a real nginx: tests/integration/test_canary_routing.py; the release
flow under load: tests/e2e/test_canary.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from shipline.config import Settings
from shipline.discovery.discover import Discovery
from shipline.discovery.routes import PeerStats, parse_stats, weighted
from shipline.discovery.splits import TrafficSplit, parse_split, parse_split_key, split_key
from shipline.release.canary import CanaryVerdict, GroupFigures, figures, judge, p99_ms, window_counts
from shipline.spec import CanarySpec, EnvironmentSettings

LIMITS = CanarySpec(weight=10, seconds=60, max_error_rate=0.01, max_p99_ms=500, min_requests=20)


def test_the_spec_takes_a_canary_per_environment_and_refuses_a_bad_one() -> None:
    settings = EnvironmentSettings.model_validate({"canary": {"weight": 25, "seconds": 30}})
    assert settings.canary == CanarySpec(weight=25, seconds=30)
    assert EnvironmentSettings().canary is None
    for bad in ({"weight": 0}, {"weight": 100}, {"seconds": 0}, {"max_error_rate": 2}, {"wieght": 10}):
        with pytest.raises(ValidationError):
            EnvironmentSettings.model_validate({"canary": bad})


def test_weighted_routes_put_the_canary_after_its_marker_only_when_both_sides_have_members() -> None:
    live = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
    assert weighted(live, ["127.0.0.1:3"], 10) == ["127.0.0.1:1", "127.0.0.1:2", "|10", "127.0.0.1:3"]
    assert weighted(live[:2], ["127.0.0.1:3"], 10) == live[:2]  # the canary is not registered yet
    assert weighted(["127.0.0.1:3"], ["127.0.0.1:3"], 10) == ["127.0.0.1:3"]  # the old ones are gone


def test_split_keys_and_values() -> None:
    assert split_key("shop", "prod") == "/shipline/canary/shop/prod"
    assert parse_split_key("/shipline/canary/shop/prod") == ("shop", "prod")
    assert parse_split_key("/shipline/canary/shop") is None
    assert parse_split_key("/shipline/cleared/shop/prod/3") is None
    split = TrafficSplit(app="shop", env="prod", release=3, weight=10, members=["127.0.0.1:20001"])
    assert parse_split(split.model_dump_json().encode()) == split
    assert parse_split(b"not json") is None


def test_discover_routes_a_split_app_with_weights_and_others_plainly(tmp_path: Path) -> None:
    discovery = Discovery(Settings(home=tmp_path), mode="dynamic")
    for port in (20001, 20002, 20003):
        discovery._event(f"/shop_PRE/127.0.0.1-{port}", deleted=False)
    discovery._event("/other_PRE/127.0.0.1-20009", deleted=False)
    split = TrafficSplit(app="shop", env="pre", release=2, weight=10, members=["127.0.0.1:20003"])
    assert discovery._event(
        "/shipline/canary/shop/pre", deleted=False, value=split.model_dump_json().encode()
    )
    assert discovery.routes() == {
        "other_pre": ["127.0.0.1:20009"],
        "shop_pre": ["127.0.0.1:20001", "127.0.0.1:20002", "|10", "127.0.0.1:20003"],
    }
    assert discovery._event("/shipline/canary/shop/pre", deleted=True)
    assert discovery.routes()["shop_pre"] == ["127.0.0.1:20001", "127.0.0.1:20002", "127.0.0.1:20003"]


def test_nginx_counts_are_parsed_and_a_window_is_their_difference() -> None:
    text = "127.0.0.1:1 10 2 0:4,20:6\n127.0.0.1:2 5 0 3:5\nnonsense\n"
    counts = parse_stats(text)
    assert counts["127.0.0.1:1"] == PeerStats(10, 2, {0: 4, 20: 6})
    assert counts["127.0.0.1:2"] == PeerStats(5, 0, {3: 5})
    later = {"127.0.0.1:1": PeerStats(15, 3, {0: 4, 20: 11}), "127.0.0.1:3": PeerStats(1, 0, {0: 1})}
    window = window_counts(counts, later)
    assert window["127.0.0.1:1"] == PeerStats(5, 1, {20: 5})
    assert window["127.0.0.1:3"] == PeerStats(1, 0, {0: 1})  # new since the start
    restarted = {"127.0.0.1:1": PeerStats(2, 0, {0: 2})}  # nginx restarted: its counts fell
    assert window_counts(counts, restarted)["127.0.0.1:1"] == PeerStats(2, 0, {0: 2})


def test_p99_is_the_upper_bound_of_the_bucket_that_holds_it() -> None:
    assert p99_ms({}) is None
    assert p99_ms({0: 100}) == 1.0
    assert p99_ms({10: 99, 100: 1}) == pytest.approx(1.05**10)  # the 100th of 100 is the 1 % above p99
    assert p99_ms({10: 98, 100: 2}) == pytest.approx(1.05**100)


def group(requests: int, errors: int, bucket: int = 10) -> GroupFigures:
    return figures({"m": PeerStats(requests, errors, {bucket: requests} if requests else {})}, ["m"])


def test_the_judge_promotes_within_limits_and_aborts_naming_each_broken_one() -> None:
    assert judge(group(1000, 10), LIMITS)[0] == "promote"  # exactly 1 %
    decision, reasons = judge(group(1000, 11), LIMITS)
    assert decision == "abort" and reasons == ["5xx rate 1.1% > max_error_rate 1.0%"]
    decision, reasons = judge(group(1000, 200, bucket=130), LIMITS)  # 1.05**130 ≈ 567 ms
    assert decision == "abort" and len(reasons) == 2 and "max_p99_ms 500 ms" in reasons[1]
    decision, reasons = judge(group(19, 0), LIMITS)
    assert decision == "abort" and "fewer than min_requests 20" in reasons[0]
    assert judge(group(0, 0), LIMITS.model_copy(update={"min_requests": 0}))[0] == "abort"  # no evidence


def test_a_verdict_reads_as_one_line_and_a_table() -> None:
    verdict = CanaryVerdict(
        app="shop",
        env="prod",
        release=4,
        decision="abort",
        decided_by="analysis",
        reasons=["5xx rate 20.0% > max_error_rate 1.0%"],
        canary=group(100, 20),
        baseline=group(900, 0),
        limits=LIMITS,
        window_seconds=60.2,
        decision_seconds=0.01,
    )
    assert verdict.summary() == (
        "canary aborted by analysis after 60 s at 10 %: 5xx rate 20.0% > max_error_rate 1.0% — "
        "canary 20/100 5xx (20.0%), p99 2 ms; baseline 0/900 5xx (0.0%), p99 2 ms"
    )
    canary, baseline = verdict.table()
    assert canary["error rate"] == "20.00%" and canary["decision"] == "abort (analysis)"
    assert baseline["requests"] == 900 and baseline["decision"] == ""
