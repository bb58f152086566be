"""Blocks are the runtime configuration: an operator's edit in the Prefect UI takes effect on the next run."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from blocks.registry import ShiplineRegistry
from shipline.build.registry import Registry
from shipline.build.sources import resolve_source
from shipline.config import Settings
from shipline.delivery import follow_delivery
from shipline.programs import find_program
from tests.images import free_ports
from tests.waiting import eventually

SPEC = """\
app: {app}
build:
  command: mkdir -p out && echo "built by $SHIPLINE_SHA" > out/hello.txt
  artifact: out
test:  # the ci block requires unit tests (require_tests): one test case that passes
  command: printf '<testsuite><testcase name="built"/></testsuite>' > junit.xml
  junit: junit.xml
scan: {{tools: [], max_findings: {{}}}}
image:
  os: {{name: busybox, version: "1.35"}}
  middleware: {{name: host-jre, version: blocks}}
  command: [cat, /app/hello.txt]
"""


@pytest.fixture
def second_registry(tmp_path: Path) -> Iterator[str]:
    """Another registry on loopback, as an operator would point Shipline at a new one."""
    binary = find_program("docker-registry")
    assert binary, "docker-registry is missing: run `make install`"
    (port,) = free_ports(1)
    address = f"127.0.0.1:{port}"
    config = tmp_path / "registry.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "version": 0.1,
                "storage": {"filesystem": {"rootdirectory": str(tmp_path / "data")}},
                "http": {"addr": address},
            }
        )
    )
    process = subprocess.Popen(
        [binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        eventually(lambda: answers(address), timeout=20, what=f"the second registry at {address}")
        yield address
    finally:
        process.terminate()
        process.wait(timeout=10)


def answers(address: str) -> bool:
    try:
        return httpx.get(f"http://{address}/v2/", trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def test_an_edited_registry_block_moves_the_next_build(
    settings: Settings, tmp_path: Path, app: str, second_registry: str, registry_block: ShiplineRegistry
) -> None:
    assert registry_block.address == settings.registry_address
    (tmp_path / app).mkdir()
    (tmp_path / app / "shipline.yaml").write_text(SPEC.format(app=app))

    # What an operator does in the UI: edit the block's address and save it.
    ShiplineRegistry(address=second_registry).save("default", overwrite=True)
    source = resolve_source(str(tmp_path / app), sources_dir=tmp_path / "sources")
    report = follow_delivery(source, ref=None, environments=[], quiet=True, echo=print)

    assert report.state == "Completed", report.message
    assert report.summary is not None
    assert report.summary.image == f"{second_registry}/apps/{app}"
    pushed = Registry(address=second_registry).manifest_digest(report.summary.image, report.summary.sha)
    assert pushed == report.summary.digest
    # The base layers were built into the new registry too, and nothing of this app reached the old one.
    new = Registry(address=second_registry)
    assert new.manifest_digest(f"{second_registry}/shipline/middleware/host-jre", "blocks") is not None
    old = Registry.of_stack(settings)
    assert old.manifest_digest(old.app_repository(app), report.summary.sha) is None
