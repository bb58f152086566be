"""What job containers get — memory, CPUs, user, network — and the pids limit of instances come from the
environment's block, which an operator edits."""

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


def test_jobs_run_as_nobody_without_network_and_instances_under_1024_pids_by_default() -> None:
    block = ShiplineEnvironment(work_pool="ci")
    assert str(block.job_user) == "65534:65534"
    assert block.job_network == "none"
    assert block.instance_pids_limit == 1024
    conditions = block.job_conditions("ci")
    assert "65534:65534 (job_uid, job_gid)" in conditions and "network none (job_network)" in conditions
    assert "read-only root filesystem" in conditions and "block 'ci'" in conditions


def test_an_operator_may_give_jobs_another_user_and_the_hosts_network() -> None:
    block = ShiplineEnvironment(work_pool="ci", job_uid=1000, job_gid=100, job_network="host")
    assert (block.job_user.uid, block.job_user.gid, block.job_network) == (1000, 100, "host")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("job_memory", "lots"),
        ("job_memory", "0m"),
        ("job_cpus", 0),
        ("job_uid", 0),  # never root
        ("job_gid", 0),
        ("job_network", "bridge"),
        ("instance_pids_limit", 0),
    ],
)
def test_nonsense_limits_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        ShiplineEnvironment(work_pool="ci", **{field: value})
