"""The session's local stack, and an app of one test on it; the integration and e2e conftests yield these.

The stack is brought up once, stopped at the end only if this session started it. A component that cannot
start fails the session's tests with the component, its log and a fix; no test is skipped for a missing
service. Set SHIPLINE_KEEP_STACK=1 to leave a stack this session started running.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
from docker.errors import NotFound

from shipline.config import Settings, load_settings
from shipline.docker import docker_client
from shipline.errors import ShiplineError
from shipline.stack.lifecycle import all_components, down, up

COMPONENTS = [
    "docker",
    "etcd",
    "registry",
    "nginx",
    "postgres",
    "prefect",
    "discover",
    "registrator",
    "logs-agent",
    "web",
    "flow-starter",
    "worker-ci",
    "worker-pre",
    "worker-prod",
]
"""Every component of the local stack, in the order `shipline status` lists them."""


def stack_settings() -> Iterator[Settings]:
    settings = load_settings()
    try:
        result = up(settings, report=lambda line: print(line, flush=True))
    except ShiplineError as exc:
        pytest.fail(f"the local stack did not come up: {exc.message}\nhint: {exc.hint}", pytrace=False)
    yield settings
    if result.started and not os.environ.get("SHIPLINE_KEEP_STACK"):
        started = [c for c in all_components(settings) if c.name in result.started]
        down(settings, components=started, report=lambda line: print(line, flush=True))


def app_on_stack(settings: Settings) -> Iterator[str]:
    """Yield an app name no other test uses; then remove every container of that app.

    The tests share one stack and find an app's instances, keys and nginx file by its name, so a unique
    name keeps them apart. Every container labelled as an instance of the app goes, in any environment and
    any state, whether a test started it itself or a release did: nothing of the test keeps running.

    Args:
        settings: The stack whose Docker Engine runs the app's containers.
    """
    name = f"test-{uuid.uuid4().hex[:8]}"
    yield name
    client = docker_client(settings.docker_url)
    for container in client.containers.list(all=True, filters={"label": f"shipline.app={name}"}):
        with contextlib.suppress(NotFound):  # removed meanwhile, by a release's own clean-up
            container.remove(force=True)
