"""A retry from the Prefect UI is a new attempt: what a release does is never served from a cache, and a
retried delivery asks for a new release run instead of finding its old failed one."""

from __future__ import annotations

import uuid

import pytest
from prefect import Task
from prefect.cache_policies import NO_CACHE

import flows.release
import tasks.promote
from shipline.release.plan import ReleaseRequest
from shipline.spec import ServiceSpec


def release_tasks() -> dict[str, Task[..., object]]:
    return {name: value for name, value in vars(flows.release).items() if isinstance(value, Task)}


def test_the_release_flow_calls_only_tasks_that_run_again_on_a_retry() -> None:
    found = release_tasks()
    assert {
        "open_release",
        "start_instances",
        "wait_for_health",
        "run_release_tests",
        "clear_for_traffic",
        "withdraw_traffic",
        "retire_instances",
    } <= set(found)
    cached = sorted(name for name, t in found.items() if t.cache_policy is not NO_CACHE)
    assert cached == [], f"served from a cache on a retry: {cached}"


def request() -> ReleaseRequest:
    return ReleaseRequest(
        app="shop",
        env="pre",
        image="127.0.0.1:5000/apps/shop",
        digest="sha256:" + "a" * 64,
        sha="b" * 40,
        service=ServiceSpec(),
    )


def test_each_delivery_attempt_has_its_own_release_key(monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = str(uuid.uuid4())
    attempt = {"count": 1}
    monkeypatch.setattr(tasks.promote.flow_run, "get_id", lambda: run_id)
    monkeypatch.setattr(tasks.promote.flow_run, "get_run_count", lambda: attempt["count"])
    first = tasks.promote.release_key(request())
    assert first == tasks.promote.release_key(request())  # a task retry within the attempt: the same run
    attempt["count"] = 2  # the operator pressed Retry
    second = tasks.promote.release_key(request())
    assert second != first
    assert first.startswith(f"release-shop-pre-sha256:{'a' * 64}-{run_id}")


def test_outside_a_flow_run_the_key_is_the_digest() -> None:
    assert tasks.promote.release_key(request()) == f"release-shop-pre-sha256:{'a' * 64}"
