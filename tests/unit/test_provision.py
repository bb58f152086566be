"""The deployment and work-pool files that `shipline up` applies."""

from pathlib import Path

import pytest

from shipline.config import POOLS
from shipline.errors import ConfigError
from shipline.stack import provision


def test_every_pool_has_a_stack_check_deployment() -> None:
    specs = provision.load_deployments()
    by_pool = {
        spec.work_pool.name: spec for spec in specs if spec.entrypoint.startswith("flows/stack_check.py")
    }
    assert sorted(by_pool) == sorted(POOLS)
    assert {provision.flow_name(spec) for spec in by_pool.values()} == {"stack-check"}
    assert all(spec.flow_file.is_file() for spec in specs)


def test_work_pools_are_process_pools() -> None:
    assert [(p.name, p.type) for p in provision.load_work_pools()] == [(p, "process") for p in POOLS]


def test_unknown_key_in_prefect_yaml_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bad = tmp_path / "prefect.yaml"
    bad.write_text(
        "deployments:\n  - name: x\n    entrypoint: flows/stack_check.py:stack_check\n"
        "    work_pool: {name: ci}\n    triggerz: []\n"
    )
    monkeypatch.setattr(provision, "PREFECT_YAML", bad)
    monkeypatch.setattr(provision, "PROJECT_ROOT", tmp_path)
    with pytest.raises(ConfigError, match="triggerz"):
        provision.load_deployments()


def test_entrypoint_naming_no_function_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = provision.DeploymentSpec(
        name="x", entrypoint="flows/stack_check.py:nothing_here", work_pool=provision.WorkPoolRef(name="ci")
    )
    with pytest.raises(ConfigError, match="names no function"):
        provision.flow_name(spec)


def test_fingerprint_follows_the_deployment_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    copy = tmp_path / "prefect.yaml"
    copy.write_text(provision.PREFECT_YAML.read_text())
    monkeypatch.setattr(provision, "PREFECT_YAML", copy)
    before = provision.fingerprint()
    copy.write_text(copy.read_text() + "\n# changed\n")
    assert provision.fingerprint() != before


def test_log_maintenance_is_deployed_nightly_on_the_ci_pool() -> None:
    (spec,) = [s for s in provision.load_deployments() if s.entrypoint.startswith("flows/log_maintenance.py")]
    assert (provision.flow_name(spec), spec.name, spec.work_pool.name) == ("log-maintenance", "nightly", "ci")
    assert [(s.cron, s.timezone, s.active) for s in spec.schedules] == [("0 3 * * *", "UTC", True)]
    assert spec.description


def test_housekeeping_is_deployed_nightly_on_the_ci_pool_one_run_at_a_time() -> None:
    (spec,) = [s for s in provision.load_deployments() if s.entrypoint.startswith("flows/housekeeping.py")]
    assert (provision.flow_name(spec), spec.name, spec.work_pool.name) == (
        "housekeeping",
        "housekeeping-nightly",
        "ci",
    )
    assert spec.concurrency_limit == 1
    assert [(s.cron, s.timezone, s.active) for s in spec.schedules] == [("30 3 * * *", "UTC", True)]
    assert spec.description and "housekeeping block" in spec.description
