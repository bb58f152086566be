"""`shipline check`: a spec's every problem found locally, before a delivery costs a round trip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from shipline.build.check import check_repository
from shipline.build.gates import EnvironmentGates
from shipline.config import PROJECT_ROOT
from tests.cli import shipline

EXAMPLES = PROJECT_ROOT / "examples"


@pytest.mark.parametrize("sample", ["hello-python", "hello-java"])
def test_the_samples_pass(sample: str) -> None:
    result = check_repository(EXAMPLES / sample)
    assert result.ok, result.problems
    assert result.app == sample


def test_three_mistakes_are_listed_all_three_with_their_lines(tmp_path: Path) -> None:
    repo = tmp_path / "app"
    shutil.copytree(EXAMPLES / "hello-python", repo)
    spec = repo / "shipline.yaml"
    text = spec.read_text().replace("app: hello-python", "app: Hello_Python")
    text = text.replace('{name: python3, version: "3.11"}', '{name: python9, version: "3.11"}')
    spec.write_text(text.replace("  stop_grace_seconds: 5\n", "  stop_grace_seconds: -5\n"))
    result = check_repository(repo)
    assert len(result.problems) == 2, result.problems  # the schema's two, in one message…
    assert any(p.startswith("shipline.yaml:2 app:") for p in result.problems)
    assert any("service.stop_grace_seconds" in p for p in result.problems)
    # …and once the schema passes, the layer names and paths are checked too.
    spec.write_text(text.replace("app: Hello_Python", "app: hello-python"))
    (repo / "app").rename(repo / "real-app")
    (repo / "app").symlink_to(tmp_path)  # the artifact leads out of the repository
    result = check_repository(repo)
    assert [p.split(":", 1)[0].split()[1] for p in result.problems] == [
        "image.middleware.name",
        "build.artifact",
        "scan.paths",
    ]


def test_the_command_exits_1_listing_every_problem_and_0_when_all_is_well(tmp_path: Path) -> None:
    repo = tmp_path / "app"
    shutil.copytree(EXAMPLES / "hello-python", repo)
    good = shipline("check", str(repo))
    assert (good.returncode, good.stdout.strip()) == (0, f"ok: hello-python ({repo}/shipline.yaml)")
    spec = repo / "shipline.yaml"
    spec.write_text(
        spec.read_text()
        .replace("app: hello-python", "app: -bad-")
        .replace("tools: [ruff, bandit]", "tools: [lint]")
    )
    bad = shipline("check", str(repo), "--json")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    report = json.loads(bad.stdout)
    assert report["ok"] is False and len(report["problems"]) == 2, report
    refused = shipline("run", str(repo))
    assert (
        refused.returncode == 1
        and "has 2 problem(s)" in refused.stderr
        and "shipline check" in refused.stderr
    )


def test_a_mount_no_environment_may_allow_is_listed(tmp_path: Path) -> None:
    repo = tmp_path / "app"
    shutil.copytree(EXAMPLES / "hello-python", repo)
    spec = repo / "shipline.yaml"
    spec.write_text(
        spec.read_text().replace(
            "  memory: 128m\n", "  memory: 128m\n  mounts:\n    - {source: /var/lib/docker, target: /d}\n"
        )
    )
    result = check_repository(repo)
    assert result.problems == [
        "shipline.yaml service.mounts[0] /var/lib/docker: /var/lib/docker is /var/lib/docker or inside it, "
        "which can never be mounted"
    ]


def test_a_plain_value_that_looks_secret_passes_with_a_note(tmp_path: Path) -> None:
    repo = tmp_path / "app"
    shutil.copytree(EXAMPLES / "hello-python", repo, symlinks=True)
    spec = repo / "shipline.yaml"
    spec.write_text(
        spec.read_text().replace(
            "{GREETING: hello from PRE}",
            "{GREETING: hello from PRE, DB_PASSWORD: hunter2, API_KEY: {secret: hello-python-api}}",
        )
    )
    result = check_repository(repo)
    assert result.ok, result.problems
    assert result.notes == [
        "shipline.yaml service.environments.pre.environment.DB_PASSWORD: a plain value under a name that "
        "looks secret is in the repository; an operator can keep it in a Prefect Secret block, and the "
        "spec name it: DB_PASSWORD: {secret: hello-python-db-password}"
    ]
    done = shipline("check", str(repo))
    assert done.returncode == 0 and "note: shipline.yaml service.environments.pre" in done.stderr
    assert "hunter2" not in done.stdout + done.stderr


def test_a_name_that_is_no_capability_and_a_bad_user_are_listed_with_their_lines(tmp_path: Path) -> None:
    repo = tmp_path / "app"
    shutil.copytree(EXAMPLES / "hello-python", repo)
    spec = repo / "shipline.yaml"
    spec.write_text(
        spec.read_text().replace(
            "  memory: 128m\n",
            "  memory: 128m\n  user: 'app user'\n  capabilities: [NET_BIND_SERVICE, GOD_MODE]\n",
        )
    )
    result = check_repository(repo)
    assert len(result.problems) == 2, result.problems
    assert result.problems[0].startswith("shipline.yaml:30 service.user: must be a uid")
    assert result.problems[1].startswith(
        "shipline.yaml:31 service.capabilities: not a Linux capability: 'GOD_MODE'"
    )


def test_a_capability_an_environments_block_does_not_allow_is_listed_when_the_blocks_are_read(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "app"
    shutil.copytree(EXAMPLES / "hello-python", repo)
    spec = repo / "shipline.yaml"
    spec.write_text(
        spec.read_text().replace("  memory: 128m\n", "  memory: 128m\n  capabilities: [NET_BIND_SERVICE]\n")
    )
    blocks = {
        "ci": EnvironmentGates(),  # ci builds and tests: what it allows instances does not matter
        "pre": EnvironmentGates(allowed_capabilities=["NET_BIND_SERVICE"]),
        "prod": EnvironmentGates(),
    }
    assert check_repository(repo, blocks).problems == [
        "shipline.yaml service.capabilities NET_BIND_SERVICE is not a capability prod allows: an operator "
        "adds it to allowed_capabilities of the shipline-environment block 'prod' (Prefect UI, Blocks)"
    ]
    assert check_repository(repo, {"ci": EnvironmentGates(), "pre": blocks["pre"]}).ok
    assert check_repository(repo).ok  # blocks unread: the spec stage checks them
