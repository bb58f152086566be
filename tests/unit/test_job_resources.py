"""The memory and CPUs of job containers come from the environment's block, which an operator edits."""

import pytest
from pydantic import ValidationError

from blocks import ShiplineEnvironment


def test_the_block_sets_memory_without_swap_and_cpus() -> None:
    block = ShiplineEnvironment(work_pool="ci", job_memory="512m", job_cpus=1.5)
    resources = block.job_resources("ci")
    assert resources.container() == {"mem_limit": "512m", "memswap_limit": "512m", "nano_cpus": 1_500_000_000}
    assert resources.where == "job_memory of the shipline-environment block 'ci'"


def test_defaults_are_two_gigabytes_and_two_cpus() -> None:
    assert ShiplineEnvironment(work_pool="ci").job_resources("ci").container()["mem_limit"] == "2g"
    assert ShiplineEnvironment(work_pool="ci").job_cpus == 2.0


@pytest.mark.parametrize(("field", "value"), [("job_memory", "lots"), ("job_memory", "0m"), ("job_cpus", 0)])
def test_nonsense_limits_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        ShiplineEnvironment(work_pool="ci", **{field: value})
