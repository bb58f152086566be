"""A capability the environment's block does not allow is refused at the delivery's spec stage and again by
the release flow, naming the capability, the environment and the block field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from prefect.logging import disable_run_logger

from blocks import ShiplineEnvironment
from shipline.config import PROJECT_ROOT
from shipline.errors import ReleaseError, SpecError
from shipline.release.plan import ReleaseRequest
from shipline.spec import ServiceSpec
from tasks.releases import check_capabilities
from tasks.spec import read_app_spec


def request(*capabilities: str) -> ReleaseRequest:
    return ReleaseRequest(
        app="shop",
        env="pre",
        image="127.0.0.1:5000/apps/shop",
        digest="sha256:" + "a" * 64,
        sha="b" * 40,
        service=ServiceSpec(capabilities=list(capabilities)),
    )


def test_the_release_flow_refuses_a_capability_its_environment_does_not_allow() -> None:
    with disable_run_logger(), pytest.raises(ReleaseError) as caught:
        check_capabilities.fn(request("NET_BIND_SERVICE"), ShiplineEnvironment(work_pool="pre"))
    assert caught.value.message == (
        "service.capabilities NET_BIND_SERVICE is not a capability pre allows: an operator adds it to "
        "allowed_capabilities of the shipline-environment block 'pre' (Prefect UI, Blocks)"
    )
    allowing = ShiplineEnvironment(work_pool="pre", allowed_capabilities=["NET_BIND_SERVICE"])
    with disable_run_logger():
        check_capabilities.fn(request("NET_BIND_SERVICE"), allowing)
        check_capabilities.fn(request(), ShiplineEnvironment(work_pool="pre"))


def test_the_spec_stage_names_each_environment_that_does_not_allow_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = {
        "ci": ShiplineEnvironment(work_pool="ci"),
        "pre": ShiplineEnvironment(work_pool="pre", allowed_capabilities=["NET_BIND_SERVICE"]),
        "prod": ShiplineEnvironment(work_pool="prod"),
    }
    monkeypatch.setattr(ShiplineEnvironment, "for_env", staticmethod(lambda env: blocks[env]))
    repo = tmp_path / "app"
    shutil.copytree(
        PROJECT_ROOT / "examples" / "hello-python", repo, ignore=shutil.ignore_patterns("__pycache__")
    )
    spec = repo / "shipline.yaml"
    spec.write_text(
        spec.read_text().replace("  memory: 128m\n", "  memory: 128m\n  capabilities: [NET_BIND_SERVICE]\n")
    )
    with disable_run_logger(), pytest.raises(SpecError) as caught:
        read_app_spec.fn(repo)
    assert caught.value.message == (
        "shipline.yaml: service.capabilities NET_BIND_SERVICE is not a capability prod allows: an operator "
        "adds it to allowed_capabilities of the shipline-environment block 'prod' (Prefect UI, Blocks)"
    )
    with disable_run_logger():  # a delivery that goes to pre only passes
        assert read_app_spec.fn(repo, environments=["pre"]).service.capabilities == ["NET_BIND_SERVICE"]
