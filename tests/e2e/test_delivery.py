"""`shipline run` end to end: the Python sample to PRE and PROD, and every way a delivery must stop early."""

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from blocks.environment import ShiplineEnvironment
from shipline.build.registry import Registry
from shipline.build.sources import resolve_source
from shipline.config import Settings
from shipline.docker import docker_client
from shipline.etcd_client import connect
from shipline.release.deploy import running_instances
from shipline.release.history import list_releases
from tests.cli import shipline
from tests.images import layer_digests

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello-python"


def shipline_run(path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    done = shipline("run", str(path), "--json", *args, timeout=900)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def releases_of(settings: Settings, app: str, env: str) -> list[Any]:
    async def read() -> list[Any]:
        async with connect(settings.etcd_url) as client:
            return await list_releases(client, app, env)

    return asyncio.run(read())


def test_sample_goes_to_pre_and_prod_with_one_digest(settings: Settings, sample: Path) -> None:
    code, report = shipline_run(sample)
    assert code == 0, report
    app = sample.name
    assert report["app"] == app and report["state"] == "Completed"
    assert (
        report["digest"].startswith("sha256:")
        and report["image"] == f"{settings.registry_address}/apps/{app}"
    )
    assert set(report["stages"].values()) == {"Completed"}
    assert list(report["stages"])[:8] == [
        "checkout_source",
        "read_app_spec",
        "prepare_base_layers",
        "compile_app",
        "run_unit_tests",
        "scan_source",
        "build_app_layer",
        "push_app_image",
    ]
    assert Registry.of_stack(settings).manifest_digest(report["image"], report["sha"]) == report["digest"]
    client = docker_client(settings.docker_url)
    middleware = client.images.get(
        client.images.get(f"{report['image']}@{report['digest']}").labels["shipline.middleware"]
    )
    app_layers = layer_digests(client, f"{report['image']}@{report['digest']}")
    assert app_layers[:-1] == middleware.attrs["RootFS"]["Layers"]  # exactly the middleware, plus the app
    with get_client(sync_client=True) as prefect:
        keys = {
            a.key
            for a in prefect.read_artifacts(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(report["flow_run_id"])]))
            )
        }
    assert {f"unit-tests-{app}", f"scan-{app}", f"image-{app}"} <= keys
    for env, replicas in (("pre", 1), ("prod", 2)):
        (release,) = releases_of(settings, app, env)
        assert (release.digest, release.status) == (report["digest"], "live")
        instances = running_instances(client, app=app, env=env)
        assert len(instances) == replicas
        for instance in instances:
            assert (
                client.containers.get(instance.container_id)
                .attrs["Config"]["Image"]
                .endswith(report["digest"])
            )
            version = httpx.get(f"http://127.0.0.1:{instance.port}/version").json()
            assert version["sha"] == report["sha"]


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("breakage", "stage", "message"),
    [
        ("unit-test", "run_unit_tests", "unit test(s) failed: tests.test_service.test_health"),
        ("build", "compile_app", "the build command exited 3"),
        ("scan", "scan_source", "scan gate failed: ruff"),
        ("spec", "read_app_spec", "shipline.yaml:32 service.environments.pre.replicas"),
        ("ref", "checkout_source", "ref not found"),
        ("mount", "read_app_spec", "service.mounts[0] /var/run/docker.sock: /var/run/docker.sock is"),
    ],
)
def test_a_broken_delivery_stops_at_its_stage_and_releases_nothing(
    settings: Settings, sample: Path, breakage: str, stage: str, message: str, tmp_path: Path
) -> None:
    args: list[str] = []
    source = sample
    if breakage == "unit-test":
        edit(
            sample / "tests" / "test_service.py",
            'assert respond("/healthz") == (200',
            'assert respond("/healthz") == (201',
        )
    elif breakage == "build":
        edit(
            sample / "shipline.yaml",
            "command: python3 -m compileall",
            "command: exit 3; python3 -m compileall",
        )
    elif breakage == "scan":
        edit(sample / "app" / "service.py", "import json\n", "import json\nimport sys\n")
    elif breakage in ("spec", "mount"):
        if breakage == "spec":
            edit(sample / "shipline.yaml", "      replicas: 1", "      replicas: 0")
        else:  # the host's Docker socket in every instance: root on PRE and PROD
            edit(
                sample / "shipline.yaml",
                "  memory: 128m\n",
                "  memory: 128m\n  mounts:\n    - {source: /var/run/docker.sock, target: /sock}\n",
            )
        # From the directory, `shipline run` refuses it before any run (as `shipline check` would)…
        refused = shipline("run", str(sample), "--json")
        assert refused.returncode == 1 and message in refused.stderr, refused.stderr
        # …from its repository (as a webhook delivers it), the delivery's spec stage refuses it.
        source = Path(resolve_source(str(sample), sources_dir=tmp_path / "sources"))
    else:
        args = ["--ref", "no-such-branch"]
    code, report = shipline_run(source, *args)
    assert code == 1
    assert report["state"] == "Failed"
    assert report["stages"][stage] == "Failed"
    assert message in report["message"]
    assert "push_app_image" not in report["stages"]
    assert releases_of(settings, sample.name, "pre") == []


def test_a_spec_without_the_tools_its_environments_block_requires_stops_at_the_scan(
    settings: Settings, sample: Path, app: str, tmp_path: Path
) -> None:
    env = f"gates-{app}"  # an environment of this test only: the shared ci, pre and prod blocks stay as is
    ShiplineEnvironment(work_pool=env, required_scan_tools=["ruff", "bandit"]).save(env, overwrite=True)
    try:
        edit(sample / "shipline.yaml", "tools: [ruff, bandit]", "tools: []")
        rule = (
            f"scan.tools leaves out ruff, which the shipline-environment block {env!r} requires "
            "(required_scan_tools)"
        )
        # From the directory, `shipline run` reads the blocks and refuses it before any run…
        refused = shipline("run", str(sample), "--env", env, "--json")
        assert refused.returncode == 1 and rule in refused.stderr, refused.stderr
        # …from its repository (as a webhook delivers it), the delivery's scan stage refuses it.
        source = Path(resolve_source(str(sample), sources_dir=tmp_path / "sources"))
        code, report = shipline_run(source, "--env", env)
    finally:
        ShiplineEnvironment.delete(env)
    assert code == 1
    assert report["stages"]["run_unit_tests"] == "Completed"
    assert report["stages"]["scan_source"] == "Failed"
    assert rule in report["message"] and "leaves out bandit" in report["message"]
    assert "push_app_image" not in report["stages"]


def test_java_sample_runs_on_the_hosts_jre(settings: Settings, tmp_path: Path, app: str) -> None:
    copy = tmp_path / app
    shutil.copytree(
        EXAMPLE.parent / "hello-java", copy, ignore=shutil.ignore_patterns("out", "test-out", "reports")
    )
    edit(copy / "shipline.yaml", "app: hello-java", f"app: {app}")
    code, report = shipline_run(copy, "--env", "pre")
    assert code == 0, report
    (instance,) = running_instances(docker_client(settings.docker_url), app=app, env="pre")
    assert httpx.get(f"http://127.0.0.1:{instance.port}/version").json()["sha"] == report["sha"]
    mounts = docker_client(settings.docker_url).containers.get(instance.container_id).attrs["Mounts"]
    assert {(m["Destination"], m["RW"]) for m in mounts} >= {("/opt/jre", False)}


def test_auto_test_failure_reaches_pre_and_never_prod(settings: Settings, sample: Path) -> None:
    edit(sample / "shipline.yaml", "contains: '\"version\"'", "contains: 'no such text'")
    code, report = shipline_run(sample)
    assert code == 1
    assert report["stages"]["push_app_image"] == "Completed"
    assert report["stages"]["release-to-pre"] == "Failed"
    assert "release-to-prod" not in report["stages"]
    assert "auto-test(s) failed" in report["message"] or "release run" in report["message"]
    (attempt,) = releases_of(settings, sample.name, "pre")
    assert attempt.status == "rolled-back"
    assert releases_of(settings, sample.name, "prod") == []
    assert running_instances(docker_client(settings.docker_url), app=sample.name, env="pre") == []
