"""The deployment and work-pool files that `shipline up` applies."""

from pathlib import Path

import pytest

from shipline.config import POOLS
from shipline.errors import ConfigError
from shipline.stack import provision


def test_deployment_names_say_what_a_run_does_and_test_plumbing_is_not_deployed() -> None:
    specs = provision.load_deployments()
    names = {f"{provision.flow_name(spec)}/{spec.name}": spec for spec in specs}
    assert {
        "delivery/delivery",
        "release/release-to-pre",
        "release/release-to-prod",
        "base-images/rebuild-base-layers",
        "gitlab-reconcile/reconcile-gitlab-every-5-minutes",
        "log-maintenance/log-maintenance-nightly",
    } <= set(names)
    assert all(spec.flow_file.is_file() for spec in specs)
    assert not [name for name in names if name.startswith("stack-check/")]
    # No bold name in the UI is a bare pool name, and each deployment says what it does.
    assert not {spec.name for spec in specs} & set(POOLS)
    assert all(spec.description and len(spec.description) > 40 for spec in specs)
    # The release deployments run on their environment's pool, as release_deployment() names them.
    from shipline.release.lifecycle import release_deployment

    assert names[release_deployment("pre")].work_pool.name == "pre"
    assert names[release_deployment("prod")].work_pool.name == "prod"


def test_renamed_deployments_are_retired_not_left_beside_the_new_ones() -> None:
    current = {f"{provision.flow_name(spec)}/{spec.name}" for spec in provision.load_deployments()}
    assert not current & set(provision.RETIRED_DEPLOYMENTS)
    assert {"delivery/ci", "release/pre", "release/prod", "stack-check/ci"} <= set(
        provision.RETIRED_DEPLOYMENTS
    )


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
    assert (provision.flow_name(spec), spec.name, spec.work_pool.name) == (
        "log-maintenance",
        "log-maintenance-nightly",
        "ci",
    )
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
