"""Secrets stay secret: a variable read from a Prefect Secret block reaches the app's container and no
other place — not etcd, not a compose file, not an artifact, a log line, a parameter or a persisted result.

The release flow runs in this test's process against the stack's Prefect server (as a worker would run
it), with a real Secret block; then every place is searched for the value.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker.models.containers import Container
from prefect.blocks.system import Secret
from prefect.logging.handlers import APILogHandler

from flows.release import release
from shipline.config import Settings
from shipline.docker import docker_client
from shipline.errors import DeployError
from shipline.etcd_client import connect
from shipline.release.compose import release_dir
from shipline.release.deploy import running_instances
from shipline.release.lifecycle import release_history, replay_request, rollback_target
from shipline.release.plan import ReleaseRequest
from shipline.spec import AutoTests, HttpCheck, ServiceSpec
from tests.cli import shipline
from tests.images import busybox_web_image
from tests.secrets_check import (
    containers_holding,
    files_holding,
    places_holding,
    results_holding,
    run_tree,
    texts_of_runs,
)
from tests.waiting import eventually


@pytest.fixture
def secret_block(app: str) -> Iterator[tuple[str, str]]:
    """A Secret block of this test's app, holding a value found nowhere else; deleted afterwards."""
    name, core = f"{app}-db", f"pw{uuid.uuid4().hex}"
    # Quotes, a $ and a newline: the value must arrive exactly as stored, never interpolated or split.
    Secret(value=f"{core} $HOME \"q'\nline").save(name, overwrite=True)
    yield name, core
    for block in (name, f"{app}-missing"):
        with contextlib.suppress(ValueError):
            Secret.delete(block)


def request(settings: Settings, app: str, block: str, plain_token: str) -> ReleaseRequest:
    client = docker_client(settings.docker_url)
    repository = f"{settings.registry_address}/apps/{app}"
    digest = busybox_web_image(client, repository, "v1", {"healthz": "ok\n"})
    variables = {"DB_PASSWORD": {"secret": block}, "API_TOKEN": plain_token, "GREETING": "hello"}
    return ReleaseRequest(
        app=app,
        env="pre",
        image=repository,
        digest=digest,
        sha="5" * 40,
        service=ServiceSpec.model_validate(
            {
                "stop_grace_seconds": 1,
                "health_timeout_seconds": 30,
                "environments": {"pre": {"environment": variables}},
            }
        ),
        auto_tests=AutoTests(http=[HttpCheck(path="/healthz", contains="ok")]),
    )


def app_environment(container: Container) -> dict[str, str]:
    """The environment of the app's own process (PID 1), as it sees it."""
    code, output = container.exec_run(["cat", "/proc/1/environ"])
    assert code == 0, output
    pairs = [item.split("=", 1) for item in output.decode().split("\x00") if "=" in item]
    return dict(pairs)


def etcd_values_holding(settings: Settings, text: str) -> list[str]:
    """Every etcd key (all of Shipline's: they begin with ``/``) whose key or value holds ``text``."""

    async def read() -> list[str]:
        async with connect(settings.etcd_url) as client:
            found = []
            for kv in await client.get_prefix(b"/"):  # every key Shipline writes; its role reads no other
                if text.encode() in kv.key or text.encode() in kv.value:
                    found.append(kv.key.decode())
            return found

    return asyncio.run(read())


def test_a_secret_reaches_the_container_and_nowhere_else(
    settings: Settings,
    app: str,
    secret_block: tuple[str, str],
    capfd: pytest.CaptureFixture[str],
) -> None:
    block, core = secret_block
    plain_token = f"tok{uuid.uuid4().hex}"
    live = release(request(settings, app, block, plain_token))
    client = docker_client(settings.docker_url)

    # The one allowed place: the container's configuration (docker inspect), where the app reads it.
    (instance,) = [i for i in running_instances(client, app=app, env="pre") if i.release == live.number]
    container = client.containers.get(instance.container_id)
    seen = app_environment(container)
    assert seen["DB_PASSWORD"] == f"{core} $HOME \"q'\nline"
    assert (seen["API_TOKEN"], seen["GREETING"]) == (plain_token, "hello")
    assert containers_holding(core, client, app) == [instance.name]
    # Docker restarts the container (restart: unless-stopped) with the environment it keeps.
    container.restart(timeout=1)
    assert app_environment(container)["DB_PASSWORD"] == seen["DB_PASSWORD"]

    # Nowhere else: etcd (every key), the compose file on disk, artifacts, log lines, parameters and
    # state messages of the run, the stack's log files, this process's output, persisted results.
    APILogHandler().flush()
    runs = run_tree(uuid.UUID(live.flow_run_id or ""))
    eventually(
        lambda: any("started" in text for where, text in texts_of_runs(runs) if where.startswith("log")),
        timeout=15,
        what="the release run's log lines in Prefect",
    )
    compose_dir = release_dir(settings.releases_dir, app, "pre", live.number)
    compose_text = (compose_dir / "docker-compose.yml").read_text()
    assert "${SHIPLINE_SECRET_DB_PASSWORD:?" in compose_text
    artifacts = [text for where, text in texts_of_runs(runs) if where.startswith("artifact compose-")]
    assert artifacts and "${SHIPLINE_SECRET_DB_PASSWORD:?" in artifacts[0]
    output = capfd.readouterr()
    results = Path(settings.prefect_environment()["PREFECT_LOCAL_STORAGE_PATH"])  # persisted task results
    log_files = sorted((settings.home / "logs").glob("*.log"))
    for secret in (core, plain_token):
        assert files_holding(secret, settings.releases_dir / app) == []
        assert secret not in output.out + output.err
    assert places_holding(core, runs, log_files) == []
    assert results_holding(core, results) == []
    assert etcd_values_holding(settings, core) == []
    # A plain value under a secret-looking name: out of files, artifacts and logs, but it is part of the
    # request — the run's parameters and the release record, which a rollback replays — and masked where
    # people read the record.
    parameters = [f"parameters of run {live.flow_run_id}"]
    assert places_holding(plain_token, runs, log_files) == parameters
    assert etcd_values_holding(settings, plain_token) == [f"/shipline/releases/{app}/pre/{live.number:06d}"]
    assert results_holding(plain_token, results)  # the release the flow returned, request and all
    shown = shipline("releases", app, "--env", "pre", "--json")
    assert shown.returncode == 0 and plain_token not in shown.stdout and core not in shown.stdout
    variables = json.loads(shown.stdout)[-1]["request"]["service"]["environments"]["pre"]["environment"]
    assert variables == {"DB_PASSWORD": {"secret": block}, "API_TOKEN": "****", "GREETING": "hello"}


def test_a_rollback_reads_the_secret_again_and_replays_the_plain_values(
    settings: Settings, app: str, secret_block: tuple[str, str]
) -> None:
    block, _ = secret_block
    first = release(request(settings, app, block, "tok-plain"))
    rotated = f"rotated{uuid.uuid4().hex}"
    Secret(value=rotated).save(block, overwrite=True)  # the operator rotates it after release 1
    target = rollback_target(release_history(app, "pre", etcd_url=settings.etcd_url), to=first.number)
    again = release(replay_request(target))
    assert again.number == first.number + 1 and again.digest == first.digest
    client = docker_client(settings.docker_url)
    (instance,) = running_instances(client, app=app, env="pre")
    assert instance.release == again.number
    seen = app_environment(client.containers.get(instance.container_id))
    assert (seen["DB_PASSWORD"], seen["API_TOKEN"]) == (rotated, "tok-plain")
    assert etcd_values_holding(settings, rotated) == []


def test_a_missing_block_fails_the_release_before_anything_is_deployed(
    settings: Settings, app: str, secret_block: tuple[str, str]
) -> None:
    state = release(request(settings, app, f"{app}-missing", "tok"), return_state=True)
    assert state.is_failed()
    with pytest.raises(DeployError) as caught:
        state.result()
    assert caught.value.message == (
        f"{app}/pre: DB_PASSWORD takes its value from the Prefect Secret block '{app}-missing', "
        "and there is no such block"
    )
    assert caught.value.hint is not None and "prefect block create secret" in caught.value.hint
    assert release_history(app, "pre", etcd_url=settings.etcd_url) == []  # no release was even opened
    assert running_instances(docker_client(settings.docker_url), app=app, env="pre") == []
