"""`shipline up --profile scale` end to end: PRE and PROD each on a Docker engine and an address of its own.

One stack of the scale profile, in a temporary home on free ports, brought up through the CLI as a user
does and stopped at the end (`shipline down`: every process it started, its two engines included). The
hello-python sample goes commit → PRE → PROD; each engine must list only its own environment's
instances, etcd must name each host's address, nginx (at PROD's address) must reach PROD's. Then the
faults of several hosts:
- the PROD host's engine stopped in the middle of a release to PROD: the release fails, naming the
  engine; PRE is untouched and no port stays reserved;
- once the engine is back, a rollback reaches it, with one of the three etcd members killed while it runs;
- PROD's worker host lost in the middle of a release (its worker and run SIGKILLed): the live release
  keeps serving, the run becomes Crashed, and the next release on the host that came back goes live;
- a retire reaches the PROD engine and leaves PRE's instance.

The tests of this module run in order and share the stack and the app.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from docker.errors import APIError, DockerException

from shipline.config import HEARTBEAT_SECONDS, PROJECT_ROOT, UNRESPONSIVE_AFTER_SECONDS
from shipline.stack.sockets import free_port_run
from tests.waiting import eventually

EXAMPLE = PROJECT_ROOT / "examples" / "hello-python"
PORT_SETTINGS = ("PREFECT", "ETCD", "ETCD_PEER", "REGISTRY", "NGINX", "DISCOVER", "WEB", "POSTGRES", "REDIS")
HOSTS = {"pre": "127.0.0.2", "prod": "127.0.0.3"}
PREFECT_CLIENT = (  # Prefect's settings of the stack (API, credential), before Prefect is imported
    "import os\n"
    "from shipline.config import load_settings\n"
    "os.environ.update(load_settings().prefect_environment())\n"
)


@dataclass(frozen=True)
class ScaleStack:
    """The stack under test: its home, its settings as variables, and how to run `shipline` on it."""

    home: Path
    env: dict[str, str]

    def shipline(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "shipline", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=PROJECT_ROOT,
        )

    def start(self, *args: str) -> subprocess.Popen[str]:
        """`shipline ARGS` started, not waited for: its output piped."""
        return subprocess.Popen(
            [sys.executable, "-m", "shipline", *args],
            env=self.env,
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def json(self, *args: str) -> Any:
        done = self.shipline(*args, "--json")
        assert done.returncode == 0, f"shipline {' '.join(args)}: {done.stderr}"
        return json.loads(done.stdout)

    def port(self, name: str) -> int:
        return int(self.env[f"SHIPLINE_{name}_PORT"])

    def engine(self, host: str) -> docker.DockerClient:
        return docker.DockerClient(base_url=f"unix://{self.home}/run/docker-{host}.sock", timeout=30)

    def engine_pid(self, host: str) -> int:
        return self.pid(f"docker-{host}")

    def pid(self, component: str) -> int:
        """The pid of a process the stack started (its record under run/)."""
        return int(json.loads((self.home / "run" / f"{component}.json").read_text())["pid"])

    def python(self, code: str) -> Any:
        """What ``code`` prints (JSON), run as the stack's own processes are (its settings, credentials)."""
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            cwd=PROJECT_ROOT,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def reserved_ports(self, host: str) -> list[int]:
        """The port reservations etcd holds on ``host``'s address (read as the stack's own processes do)."""
        return list(
            self.python(
                "import asyncio, json\n"
                "from shipline.config import load_settings\n"
                "from shipline.etcd_client import connect\n"
                "from shipline.release.ports import reserved_ports\n"
                "async def main():\n"
                "    async with connect(load_settings().etcd_url) as etcd:\n"
                f"        print(json.dumps(sorted(await reserved_ports(etcd, {host!r}))))\n"
                "asyncio.run(main())\n"
            )
        )

    def running_flow_runs(self, pool: str) -> list[str]:
        """Ids of the flow runs Running in a work pool, from Prefect's API."""
        return list(
            self.python(
                PREFECT_CLIENT + "import json\n"
                "from prefect.client.orchestration import get_client\n"
                "from prefect.client.schemas.filters import (\n"
                "    FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType,\n"
                "    WorkPoolFilter, WorkPoolFilterName)\n"
                "from prefect.client.schemas.objects import StateType\n"
                "with get_client(sync_client=True) as client:\n"
                "    runs = client.read_flow_runs(\n"
                "        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(\n"
                "            type=FlowRunFilterStateType(any_=[StateType.RUNNING]))),\n"
                f"        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[{pool!r}])))\n"
                "print(json.dumps([str(run.id) for run in runs]))\n"
            )
        )

    def flow_run_state(self, flow_run_id: str) -> str | None:
        """A flow run's state type (``CRASHED``...), from Prefect's API."""
        state: str | None = self.python(
            PREFECT_CLIENT + "import json, uuid\n"
            "from prefect.client.orchestration import get_client\n"
            "with get_client(sync_client=True) as client:\n"
            f"    state = client.read_flow_run(uuid.UUID({flow_run_id!r})).state\n"
            "print(json.dumps(state.type.value if state else None))\n"
        )
        return state


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for each in sockets:
            each.bind(("127.0.0.1", 0))
        return [each.getsockname()[1] for each in sockets]
    finally:
        for each in sockets:
            each.close()


def free_run(count: int) -> int:
    """The first of ``count`` consecutive ports that are free now."""
    base = free_port_run(count, first=20000, last=20999)  # below the port ranges
    assert base is not None, f"no {count} consecutive free ports on 127.0.0.1"
    return base


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaleStack]:
    """A scale-profile stack of this module only; `shipline down` stops all it started, engines included."""
    home = tmp_path_factory.mktemp("scale") / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIPLINE_", "PREFECT_"))}
    env |= {"SHIPLINE_PROFILE": "scale", "SHIPLINE_HOME": str(home), "PYTHONPATH": str(PROJECT_ROOT)}
    ports = free_ports(len(PORT_SETTINGS))
    env |= {f"SHIPLINE_{name}_PORT": str(port) for name, port in zip(PORT_SETTINGS, ports, strict=True)}
    # The 3 etcd members take client ports ETCD + 2i and peer ports ETCD_PEER + 2i: six in a row.
    first = free_run(6)
    env |= {"SHIPLINE_ETCD_PORT": str(first), "SHIPLINE_ETCD_PEER_PORT": str(first + 1)}
    stack = ScaleStack(home, env)
    try:
        up = stack.shipline("up", timeout=600)
        assert up.returncode == 0, f"the scale stack did not come up:\n{up.stdout}\n{up.stderr}"
        yield stack
    finally:
        # Before down: when this stack started the machine's engine (nothing was running), down stops it.
        _remove_images_of(stack.port("REGISTRY"))
        down = stack.shipline("down", timeout=300)
        assert down.returncode == 0, down.stderr
        assert not [p for p in (home / "run").glob("*.json") if p.name != "provisioned.json"], "left running"
        assert str(home) not in Path("/proc/mounts").read_text(), "an engine's mounts were left behind"


def _remove_images_of(registry_port: int) -> None:
    """The images this stack's builds left on the machine's shared engine (tagged with its registry)."""
    try:
        client = docker.from_env()
        client.ping()
    except DockerException:  # the engine never came up: no image to remove
        return
    prefix = f"127.0.0.1:{registry_port}/"
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith(prefix):
                with contextlib.suppress(APIError):
                    client.images.remove(tag, noprune=False)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Python sample under an app name of its own."""
    app = f"scale-{uuid.uuid4().hex[:8]}"
    copy = tmp_path_factory.mktemp("sample") / app
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("__pycache__", "reports", "REVISION"))
    spec = copy / "shipline.yaml"
    spec.write_text(spec.read_text().replace("app: hello-python", f"app: {app}"))
    return copy


@pytest.fixture(scope="module")
def delivered(stack: ScaleStack, sample: Path) -> dict[str, Any]:
    """The sample delivered to PRE and PROD once: `shipline run --json`'s report."""
    done = stack.shipline("run", str(sample), "--json")
    assert done.stdout, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    assert done.returncode == 0 and report["state"] == "Completed", report
    return report


def containers(client: docker.DockerClient, app: str) -> list[tuple[str, str]]:
    """(env, release) of every container of ``app`` on an engine."""
    # Sparse: the list's own labels, no inspect per container (one removed meanwhile would be a 404).
    found = client.containers.list(all=True, sparse=True, filters={"label": f"shipline.app={app}"})
    labels = [c.attrs["Labels"] for c in found]
    return sorted((each["shipline.env"], each["shipline.release"]) for each in labels)


def test_status_lists_every_process_under_its_host(stack: ScaleStack) -> None:
    document = stack.json("status")
    assert document["profile"] == "scale" and document["all_up"], document
    hosts = {name: c["host"] for name, c in document["components"].items()}
    for host in ("pre", "prod"):
        assert {n for n, h in hosts.items() if h == host} >= {
            f"docker-{host}",
            f"registrator-{host}",
            f"logs-agent-{host}",
            f"worker-{host}",
        }
    assert hosts["nginx"] == hosts["discover"] == "prod"
    etcd = ("etcd-1", "etcd-2", "etcd-3")  # the profile's cluster (over TLS)
    # Prefect's API and its services as two processes, meeting in Redis: all on the main host.
    main = (*etcd, "registry", "prefect", "prefect-services", "redis", "postgres", "worker-ci")
    assert {hosts[n] for n in main} == {"main"}
    assert {document["components"][f"docker-{h}"]["managed"] for h in HOSTS} == {True}


def test_pre_and_prod_each_run_on_their_own_engine(stack: ScaleStack, delivered: dict[str, Any]) -> None:
    app, digest = delivered["app"], delivered["digest"]
    assert containers(stack.engine("pre"), app) == [("pre", "1")]
    assert containers(stack.engine("prod"), app) == [("prod", "1"), ("prod", "1")]
    assert containers(docker.from_env(), app) == []  # ci's engine builds; it runs no instance
    for host in HOSTS:
        for container in stack.engine(host).containers.list(filters={"label": f"shipline.app={app}"}):
            assert container.attrs["Config"]["Image"].endswith(digest)  # pulled from the shared registry
            assert container.attrs["Config"]["Env"].count(f"BIND={HOSTS[host]}") == 1
    services = stack.json("services", app)
    assert sorted(s["env"] for s in services) == ["pre", "prod", "prod"]
    for service in services:
        ip = HOSTS[service["env"]]
        assert service["key"] == f"/{app}_{service['env'].upper()}/{ip}-{service['port']}"
        version = httpx.get(f"http://{ip}:{service['port']}/version", timeout=5).json()
        assert version["sha"] == delivered["sha"]
        other = next(address for address in HOSTS.values() if address != ip)
        with pytest.raises(httpx.ConnectError):  # bound to its host's address only
            httpx.get(f"http://{other}:{service['port']}/version", timeout=5)
    edge = f"{HOSTS['prod']}:{stack.port('NGINX')}"  # nginx runs on PROD's host, at its address
    through_nginx = httpx.get(f"http://{edge}/version", headers={"Host": f"{app}.prod.localhost"}, timeout=5)
    assert through_nginx.json()["sha"] == delivered["sha"]
    with pytest.raises(httpx.ConnectError):  # not on the main host's address
        httpx.get(f"http://127.0.0.1:{stack.port('NGINX')}/version", timeout=5)
    assert httpx.get(f"http://{HOSTS['prod']}:{stack.port('DISCOVER')}/healthz", timeout=5).text == "ok\n"
    releases = {env: stack.json("releases", app, "--env", env) for env in HOSTS}
    assert {r[-1]["digest"] for r in releases.values()} == {digest}
    eventually(
        lambda: (
            {(line["env"], line["host"]) for line in stack.json("logs", "search", "listening", "--app", app)}
            == {("pre", "pre"), ("prod", "prod")}
        ),
        timeout=30,
        interval=0.5,
        what="each instance's first line in the log store, tagged with its host by that host's agent",
    )


def slow_to_start_in_prod(sample: Path) -> None:
    """A new commit whose PROD instances wait 30 s before they listen (PRE's start at once)."""
    main = sample / "app" / "__main__.py"
    text = main.read_text().replace("import threading\n", "import threading\nimport time\n", 1)
    main.write_text(
        text.replace(
            "def main() -> None:\n",
            'def main() -> None:\n    time.sleep(float(os.environ.get("SLOW_START", "0")))\n',
            1,
        )
    )
    spec = sample / "shipline.yaml"
    spec.write_text(
        spec.read_text()
        .replace("  health_path: /healthz\n", "  health_path: /healthz\n  health_timeout_seconds: 20\n", 1)
        .replace("{GREETING: hello from PROD}", "{GREETING: hello from PROD, SLOW_START: '30'}", 1)
    )


def test_a_prod_engine_stopped_mid_release_fails_it_cleanly(
    stack: ScaleStack, sample: Path, delivered: dict[str, Any]
) -> None:
    app = delivered["app"]
    slow_to_start_in_prod(sample)
    run = stack.start("run", str(sample), "--json")
    try:
        prod = stack.engine("prod")
        eventually(
            lambda: containers(prod, app).count(("prod", "2")) == 2,
            timeout=600,
            interval=0.5,
            what="release 2's instances on the PROD engine",
        )
        os.kill(stack.engine_pid("prod"), signal.SIGTERM)  # the PROD host's engine stops
        out, err = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
    report = json.loads(out)
    assert run.returncode == 1 and report["state"] == "Failed", (report, err)
    socket_path = f"{stack.home}/run/docker-prod.sock"
    assert f"Docker Engine at unix://{socket_path} does not answer" in report["message"]
    assert report["stages"]["release-to-pre"] == "Completed"
    assert report["stages"]["release-to-prod"] == "Failed"
    prod_history = stack.json("releases", app, "--env", "prod")
    assert [(r["number"], r["status"]) for r in prod_history] == [(1, "live"), (2, "failed")]
    assert stack.reserved_ports("127.0.0.3") == []  # given back, though the engine never answered again
    assert stack.reserved_ports("127.0.0.2") == []
    # PRE took the new commit before PROD's release began; the fault on PROD's host left it serving.
    assert containers(stack.engine("pre"), app) == [("pre", "2")]
    assert stack.json("releases", app, "--env", "pre")[-1]["status"] == "live"
    (pre,) = [s for s in stack.json("services", app) if s["env"] == "pre"]
    new_sha = stack.json("releases", app, "--env", "pre")[-1]["sha"]
    assert new_sha != delivered["sha"]
    assert httpx.get(f"http://127.0.0.2:{pre['port']}/version", timeout=5).json()["sha"] == new_sha
    with pytest.raises(DockerException):
        stack.engine("prod").ping()
    # PROD's registrator keeps no lease while its engine is away: its host's keys expire, PRE's stay.
    eventually(
        lambda: sorted(s["env"] for s in stack.json("services", app)) == ["pre"],
        timeout=30,
        interval=0.5,
        what="PROD's keys expired, PRE's key kept",
    )


def test_a_rollback_reaches_the_prod_engine_once_it_is_back(
    stack: ScaleStack, delivered: dict[str, Any]
) -> None:
    app = delivered["app"]
    up = stack.shipline("up", timeout=600)
    assert up.returncode == 0 and "docker-prod" in up.stdout, up.stdout + up.stderr
    rollback = stack.start("rollback", app, "--env", "prod", "--to", "1")
    try:
        # One etcd member dies while the release runs (the one every client lists first): the release
        # goes on with the other two, and discovery keeps following.
        eventually(
            lambda: containers(stack.engine("prod"), app).count(("prod", "3")) >= 1,
            timeout=300,
            interval=0.2,
            what="the rollback's release 3 starting on the PROD engine",
        )
        os.kill(stack.pid("etcd-1"), signal.SIGKILL)
        out, err = rollback.communicate(timeout=600)
    finally:
        if rollback.poll() is None:
            rollback.kill()
    assert rollback.returncode == 0, out + err
    nginx = f"http://{HOSTS['prod']}:{stack.port('NGINX')}/version"
    eventually(  # release 1's digest again, routed by discover without etcd-1
        lambda: (
            httpx.get(nginx, headers={"Host": f"{app}.prod.localhost"}, timeout=5).json()["sha"]
            == delivered["sha"]
        ),
        timeout=10,
        what="nginx serving the rolled-back release",
    )
    # The rollback's deploy removed what the failed release left on the engine (restarted with it), and
    # deployed release 1's digest there again as release 3.
    assert containers(stack.engine("prod"), app) == [("prod", "3"), ("prod", "3")]
    history = stack.json("releases", app, "--env", "prod")
    assert (history[-1]["number"], history[-1]["status"], history[-1]["digest"]) == (
        3,
        "live",
        delivered["digest"],
    )
    keys = sorted(s["key"] for s in stack.json("services", app) if s["env"] == "prod")
    assert len(keys) == 2 and all(key.startswith(f"/{app}_PROD/127.0.0.3-") for key in keys)
    restarted = stack.shipline("up", timeout=600)  # the dead member rejoins its cluster
    assert restarted.returncode == 0 and "etcd-1" in restarted.stdout, restarted.stdout + restarted.stderr


def kill_the_prod_worker_host(stack: ScaleStack, flow_run_id: str) -> None:
    """SIGKILL PROD's worker (its process group) and the flow run it started: the worker's host died."""
    worker = stack.pid("worker-prod")
    os.killpg(worker, signal.SIGKILL)
    marker = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):  # a process that ended meanwhile, or not ours to read
            if marker in environ.read_bytes().split(b"\0"):
                os.kill(int(environ.parent.name), signal.SIGKILL)  # the run's launcher: the run goes with it
    eventually(lambda: not Path(f"/proc/{worker}").exists(), timeout=10, what="PROD's worker gone")


def test_a_lost_prod_worker_host_crashes_its_run_and_the_next_release_recovers(
    stack: ScaleStack, sample: Path, delivered: dict[str, Any]
) -> None:
    app = delivered["app"]
    nginx = f"http://{HOSTS['prod']}:{stack.port('NGINX')}/version"
    host = {"Host": f"{app}.prod.localhost"}
    spec = sample / "shipline.yaml"
    slow = spec.read_text()  # PROD's instances wait 30 s before they listen (slow_to_start_in_prod)
    # A commit whose PROD instances do not listen for 10 minutes: release 4 waits for their health.
    spec.write_text(
        slow.replace("health_timeout_seconds: 20", "health_timeout_seconds: 600").replace("'30'", "'600'")
    )
    run = stack.start("run", str(sample), "--json")
    try:
        eventually(
            lambda: containers(stack.engine("prod"), app).count(("prod", "4")) == 2,
            timeout=600,
            interval=0.5,
            what="release 4's instances on the PROD engine",
        )
        (stuck,) = stack.running_flow_runs("prod")
        kill_the_prod_worker_host(stack, stuck)
        # The live release keeps serving through the edge while PROD's worker host is away.
        assert httpx.get(nginx, headers=host, timeout=5).json()["sha"] == delivered["sha"]
        back = stack.shipline("up", timeout=600)  # the host is back: its worker starts again
        assert back.returncode == 0 and "worker-prod" in back.stdout, back.stdout + back.stderr
        # Nobody reports for the dead run: the unresponsive-run automation marks it Crashed.
        eventually(
            lambda: stack.flow_run_state(stuck) == "CRASHED",
            timeout=UNRESPONSIVE_AFTER_SECONDS + 3 * HEARTBEAT_SECONDS,
            interval=2,
            what=f"the dead run {stuck} marked Crashed",
        )
        out, err = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
    report = json.loads(out)
    assert run.returncode == 1 and report["stages"]["release-to-prod"] in {"Crashed", "Failed"}, (report, err)
    assert report["stages"]["release-to-pre"] == "Completed"

    # The next release on the host that came back: it fails the abandoned release 4 and goes live.
    spec.write_text(slow.replace("'30'", "'0'"))
    again = stack.shipline("run", str(sample), "--json")
    fixed = json.loads(again.stdout)
    assert again.returncode == 0 and fixed["state"] == "Completed", (fixed, again.stderr)
    history = stack.json("releases", app, "--env", "prod")
    assert [(r["number"], r["status"]) for r in history[-3:]] == [
        (3, "superseded"),
        (4, "failed"),
        (5, "live"),
    ]
    assert containers(stack.engine("prod"), app) == [("prod", "5"), ("prod", "5")]
    assert httpx.get(nginx, headers=host, timeout=5).json()["sha"] == fixed["sha"]
    assert stack.reserved_ports(HOSTS["prod"]) == []  # the dead deploy's, given back by the next one


def test_retire_reaches_the_prod_engine_and_leaves_pre(stack: ScaleStack, delivered: dict[str, Any]) -> None:
    app = delivered["app"]
    retired = stack.shipline("retire", app, "--env", "prod")
    assert retired.returncode == 0, retired.stderr
    assert containers(stack.engine("prod"), app) == []
    assert len(containers(stack.engine("pre"), app)) == 1  # the other host keeps its instance
    eventually(
        lambda: not [s for s in stack.json("services", app) if s["env"] == "prod"],
        timeout=30,
        what="PROD's keys gone from etcd",
    )
