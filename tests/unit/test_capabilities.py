"""Capabilities are the operator's decision: names as Docker spells them, and what an environment allows."""

import pytest
from pydantic import ValidationError

from blocks import ShiplineEnvironment
from shipline.capabilities import capability_names, capability_problems
from shipline.spec import ServiceSpec


def test_names_are_read_as_docker_spells_them_each_once() -> None:
    assert capability_names(["cap_net_bind_service", "NET_BIND_SERVICE", " sys_ptrace"]) == [
        "NET_BIND_SERVICE",
        "SYS_PTRACE",
    ]


@pytest.mark.parametrize("name", ["ALL", "NET_BIND", "", "CAP_", "net bind service"])
def test_what_is_no_capability_is_refused_by_name(name: str) -> None:
    with pytest.raises(ValueError, match="not a Linux capability"):
        capability_names([name])


def test_a_spec_asking_for_one_the_environment_does_not_allow_names_it_the_environment_and_the_field() -> (
    None
):
    problems = capability_problems(
        ["NET_BIND_SERVICE", "SYS_ADMIN"], ["NET_BIND_SERVICE"], env="prod", field="service.capabilities"
    )
    assert problems == [
        "service.capabilities SYS_ADMIN is not a capability prod allows: an operator adds it to "
        "allowed_capabilities of the shipline-environment block 'prod' (Prefect UI, Blocks)"
    ]
    assert capability_problems(["NET_BIND_SERVICE"], ["NET_BIND_SERVICE"], env="prod", field="f") == []


def test_by_default_an_environment_allows_none_and_a_spec_asks_for_none() -> None:
    block = ShiplineEnvironment(work_pool="prod")
    assert block.allowed_capabilities == []
    assert ServiceSpec().capabilities == []
    assert capability_problems(["NET_BIND_SERVICE"], block.allowed_capabilities, env="prod", field="f")


def test_the_block_stores_names_as_docker_spells_them_and_refuses_others() -> None:
    block = ShiplineEnvironment(work_pool="prod", allowed_capabilities=["cap_net_raw", "NET_RAW"])
    assert block.allowed_capabilities == ["NET_RAW"]
    with pytest.raises(ValidationError, match="allowed_capabilities"):
        ShiplineEnvironment(work_pool="prod", allowed_capabilities=["ALL"])
