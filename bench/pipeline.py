"""The delivery flow against the same commands as a plain shell script, and commit -> PROD per stage."""

# ruff: noqa: E501 - the shell script below is kept one command per line, as a person would write it

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shipline.build.sources import resolve_source
from shipline.config import PROJECT_ROOT, Settings
from shipline.delivery import follow_delivery
from shipline.spec import load_spec

SAMPLE = PROJECT_ROOT / "examples" / "hello-python"


def _snapshot(name: str, scratch: Path, settings: Settings, marker: str) -> str:
    copy = scratch / marker / name  # one directory name, one snapshot repository, a commit per marker
    shutil.copytree(SAMPLE, copy, ignore=shutil.ignore_patterns("__pycache__", "reports"))
    spec = copy / "shipline.yaml"
    spec.write_text(spec.read_text().replace("app: hello-python", f"app: {name}"))
    (copy / "app" / "__init__.py").write_text(f'"""bench {marker}"""\n\nVERSION = "1.0.0"\n')
    return resolve_source(str(copy), sources_dir=settings.home / "sources")


def retire_apps(apps: list[str], environments: tuple[str, ...] = ("pre", "prod")) -> None:
    """Take the bench's apps out of every environment (``shipline retire``), so that a bench leaves no
    instance running to load the next one; one that fails is said, not raised (the figures stand)."""
    for app in apps:
        for env in environments:
            done = subprocess.run(
                [sys.executable, "-m", "shipline", "retire", app, "--env", env, "--grace", "1"],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0 and "runs nothing there" not in done.stderr:
                print(f"could not retire {app} from {env}: {done.stderr.strip()[-300:]}")


def shell_script(source: str, middleware: str, registry: str, app: str, venv_bin: Path) -> str:
    """The build stages as one shell script: what the delivery flow runs, without Prefect."""
    spec = load_spec(SAMPLE)
    assert spec.test is not None
    return f"""set -e
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
git init -q "$work/ws" && cd "$work/ws" && git fetch -q --depth 1 file://{source} HEAD && git checkout -q FETCH_HEAD
sha=$(git rev-parse HEAD)
docker run --rm --network host -v "$PWD:/workspace" -w /workspace {middleware} sh -c 'export SHIPLINE_SHA='$sha'; {spec.build.command}'
docker run --rm --network host -v "$PWD:/workspace" -w /workspace {middleware} sh -c '{spec.test.command}'
{venv_bin}/ruff check --no-cache --output-format=json app > /dev/null
{venv_bin}/bandit -q -r -f json app > /dev/null
mkdir ctx && cp -r app ctx/artifact
printf 'FROM {middleware}\\nWORKDIR /srv\\nCOPY artifact /srv/app\\nCMD ["python3", "-m", "app"]\\n' > ctx/Dockerfile
docker build -q -t {registry}/apps/{app}:$sha ctx > /dev/null
docker push -q {registry}/apps/{app}:$sha > /dev/null
"""


def run(settings: Settings) -> dict[str, float]:
    """Time the shell script, the delivery flow's build stages, and a full delivery to PROD."""
    from shipline.build.registry import Registry

    spec = load_spec(SAMPLE)
    registry = Registry.of_stack(settings)
    repository = registry.middleware_repository(spec.image.middleware)
    middleware = f"{repository}:{spec.image.middleware.version}"
    with tempfile.TemporaryDirectory() as scratch:
        name = f"benchpipe-{int(time.time())}"
        try:
            figures, stages = _measure(name, Path(scratch), settings, middleware)
        finally:
            retire_apps([name])
    figures["overhead_over_shell"] = (
        figures["delivery_flow_build_seconds"] / figures["shell_script_seconds"] - 1
    )
    print("commit -> PROD, per stage:")
    for line in stages:
        if "Completed" in line:
            print(f"  {line.strip()}")
    return figures


def _measure(
    name: str, scratch: Path, settings: Settings, middleware: str
) -> tuple[dict[str, float], list[str]]:
    """The three timings of ``run``, on the app ``name``; and the full delivery's stage lines."""
    from shipline.build.registry import Registry

    registry = Registry.of_stack(settings)
    figures: dict[str, float] = {}
    # The shell script takes the base layers as they are: a first delivery (not timed) builds them
    # where this stack's registry has none yet.
    warm = follow_delivery(
        _snapshot(name, scratch, settings, "warm"),
        ref=None,
        environments=[],
        quiet=True,
        echo=print,
    )
    assert warm.state == "Completed", warm
    source = _snapshot(name, scratch, settings, "shell")
    script = shell_script(source, middleware, settings.registry_address, name, Path(sys.executable).parent)
    started = time.monotonic()
    docker_config = registry.docker_config(scratch / "docker-config")  # the script's pushes
    environment = {**os.environ, "DOCKER_HOST": settings.docker_url, "DOCKER_CONFIG": str(docker_config)}
    subprocess.run(["bash", "-c", script], check=True, env=environment)
    figures["shell_script_seconds"] = time.monotonic() - started

    source = _snapshot(name, scratch, settings, "flow")
    started = time.monotonic()
    report = follow_delivery(source, ref=None, environments=[], quiet=True, echo=print)
    assert report.state == "Completed", report
    figures["delivery_flow_build_seconds"] = time.monotonic() - started

    source = _snapshot(name, scratch, settings, "prod")
    stages: list[str] = []
    started = time.monotonic()
    report = follow_delivery(
        source, ref=None, environments=None, quiet=False, echo=lambda line: stages.append(line)
    )
    assert report.state == "Completed", report
    figures["commit_to_prod_seconds"] = time.monotonic() - started
    return figures, stages
