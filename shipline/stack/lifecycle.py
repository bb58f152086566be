"""Start, stop and report the embedded local stack.

``up`` starts only what does not already answer and waits until every component does; ``down`` stops
exactly the processes that ``up`` started, by their recorded pid; ``status`` reports each component.
Both ``up`` and ``down`` hold a lock under the run directory so that two of them never interleave.
"""

from __future__ import annotations

import fcntl
import re
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from shipline.config import Settings
from shipline.errors import ComponentStartError, MissingBinaryError, PortInUseError
from shipline.stack.components import Component, DockerEngine, ProjectProcess, infrastructure, workers
from shipline.stack.credentials import ensure_api_credential
from shipline.stack.processes import ProcessRecord, ProcessTable
from shipline.stack.sockets import find_listener
from shipline.stack.supervise import read_supervision

Report = Callable[[str], None]
SETTING_DEPENDENT = re.compile(r"etcd(-[0-9]+)?|redis|prefect-services")
"""Components that exist or not by settings: etcd members (``etcd`` alone, ``etcd-1`` … in a cluster),
Redis and Prefect's services apart (``SHIPLINE_PREFECT_SERVICES=split``). ``down`` stops those ``up``
started even when it runs with other settings."""


class State(StrEnum):
    UP = "up"
    DOWN = "down"
    STARTING = "starting"


@dataclass(frozen=True)
class ComponentStatus:
    """One component as ``status`` and ``up`` report it."""

    name: str
    state: State
    url: str
    managed: bool
    """True when Shipline started the running process (``down`` stops it)."""
    pid: int | None
    log: str
    restarts: int = 0
    """Times its supervisor started it again after it exited unasked."""
    last_exit: str | None = None
    host: str = "main"
    """The (simulated) host it runs on: ``main``, or a host of the scale profile (``pre``, ``prod``)."""

    def as_dict(self) -> dict[str, object]:
        return {
            "host": self.host,
            "state": str(self.state),
            "url": self.url,
            "managed": self.managed,
            "pid": self.pid,
            "log": self.log,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
        }


@dataclass(frozen=True)
class UpResult:
    """What ``up`` did: the components it started, and the state of all of them afterwards."""

    started: list[str]
    components: list[ComponentStatus]
    provisioned: bool


def all_components(settings: Settings) -> list[Component]:
    return [*infrastructure(settings), *workers(settings)]


@contextmanager
def stack_lock(settings: Settings) -> Iterator[None]:
    """Serialise ``up`` and ``down`` across processes."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    with (settings.run_dir / "stack.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def component_status(component: Component, table: ProcessTable) -> ComponentStatus:
    """Probe one component and tell whether it is ours."""
    record = table.running(component.name)
    answers = component.probe(record)
    if answers:
        state = State.UP
    elif record is not None:
        state = State.STARTING
    else:
        state = State.DOWN
    supervision = read_supervision(table.run_dir, component.name) if record is not None else None
    return ComponentStatus(
        name=component.name,
        state=state,
        url=component.url,
        managed=record is not None,
        pid=record.pid if record else None,
        log=str(component.log),
        restarts=supervision.restarts if supervision else 0,
        last_exit=supervision.last_exit if supervision else None,
        host=component.host_name,
    )


def status(settings: Settings) -> list[ComponentStatus]:
    """The state of every component, without changing anything."""
    table = ProcessTable(settings.run_dir)
    return [component_status(component, table) for component in all_components(settings)]


def _check_startable(component: Component) -> None:
    if component.resolve_binary() is None:
        raise MissingBinaryError(
            f"{component.name}: program {component.binary!r} is not installed",
            hint=f"install {component.package} (make install does it on Debian)",
        )
    if component.port is not None:
        listener = find_listener(component.port)
        if listener is not None:
            raise PortInUseError(
                f"{component.name}: port {component.port} is held by {listener.describe()}, "
                f"which does not answer as {component.name}",
                hint=f"stop that program, or move Shipline's {component.name} with "
                f"SHIPLINE_{component.name.upper()}_PORT",
            )


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(f"    {line}" for line in text[-lines:])


def _wait_all(
    pending: dict[str, tuple[Component, ProcessRecord]], table: ProcessTable, report: Report
) -> None:
    """Wait until each started component answers; fail fast on the first that exits or times out.

    A component that times out is stopped, so that the next ``up`` starts it afresh.
    """
    deadlines = {name: time.monotonic() + comp.start_timeout for name, (comp, _) in pending.items()}
    started_at = time.monotonic()
    while pending:
        for name, (component, record) in list(pending.items()):
            if component.probe(record):
                component.ready()
                report(f"  {name:<12} up after {time.monotonic() - started_at:.1f}s  {component.url}")
                del pending[name]
            elif not record.alive:
                table.forget(name)
                raise ComponentStartError(
                    f"{name}: the process exited during start-up; last lines of {component.log}:\n"
                    f"{_tail(component.log)}",
                    hint=component.fix_hint(),
                )
            elif time.monotonic() > deadlines[name]:
                table.stop(name, timeout=5.0, stop_signal=component.stop_signal)
                raise ComponentStartError(
                    f"{name}: no answer at {component.url} within {component.start_timeout:.0f}s; "
                    f"last lines of {component.log}:\n{_tail(component.log)}",
                    hint=component.fix_hint(),
                )
        if pending:
            time.sleep(0.1)


def start_missing(components: Sequence[Component], table: ProcessTable, report: Report) -> list[str]:
    """Start each component that does not answer and wait until all of them answer.

    Returns:
        The names of the components started.

    Raises:
        MissingBinaryError, PortInUseError, ComponentStartError: naming the component and its log.
    """
    pending: dict[str, tuple[Component, ProcessRecord]] = {}
    for component in components:
        record = table.running(component.name)
        if component.probe(record):
            component.ready()
            whose = f"pid {record.pid}" if record else "not started by Shipline"
            report(f"  {component.name:<12} already running ({whose})  {component.url}")
            continue
        if record is not None:
            # Ours but not answering yet: another `up` started it moments ago; wait for it.
            pending[component.name] = (component, record)
            continue
        _check_startable(component)
        component.prepare()
        new = table.spawn(
            component.name, component.launch_command(), log=component.log, env=component.environment()
        )
        report(f"  {component.name:<12} starting (pid {new.pid}, log {component.log})")
        pending[component.name] = (component, new)
    started = list(pending)
    _wait_all(pending, table, report)
    return started


def restart_without_credential(
    settings: Settings, components: Sequence[Component], table: ProcessTable, report: Report
) -> list[str]:
    """Stop our Prefect processes that started before the stack's current Prefect credential.

    Their environment lacks it (a stack from before Prefect required one, or a credential rotated since):
    the server would still answer anyone, a worker or daemon would be refused. ``up`` then starts them
    again with it.

    Returns:
        The names of the components stopped.
    """
    issued = settings.prefect_client_credentials.stat().st_mtime
    stopped = []
    for component in reversed(components):  # workers first, the server last
        record = table.running(component.name)
        if isinstance(component, ProjectProcess) and record is not None and record.started_at < issued:
            report(f"  {component.name:<12} restarting: it started before Prefect's current credential")
            table.stop(component.name, timeout=20.0, stop_signal=component.stop_signal)
            stopped.append(component.name)
    return stopped


def up(
    settings: Settings,
    *,
    report: Report = print,
    provision: Callable[[Settings, Report], bool] | None = None,
    only: Collection[str] | None = None,
) -> UpResult:
    """Start what is not running, provision Prefect, and wait until every component answers.

    Prefect's credential is generated on the first ``up``; Prefect processes started before it are
    restarted with it (``restart_without_credential``).

    Args:
        settings: Where the stack listens and keeps its state.
        report: Receives one progress line at a time.
        provision: Creates work pools, blocks and deployments once Prefect answers; returns whether it
            changed anything. Defaults to ``shipline.stack.provision.provision``.
        only: Names of the components to start (default: all); provisioning runs when Prefect is one.

    Returns:
        What was started, and every component's state.

    Raises:
        MissingBinaryError, PortInUseError, ComponentStartError: naming the component and its log.
    """
    if provision is None:
        from shipline.stack.provision import provision as default_provision

        provision = default_provision

    def chosen(components: Sequence[Component]) -> list[Component]:
        return [c for c in components if only is None or c.name in only]

    table = ProcessTable(settings.run_dir)
    with stack_lock(settings):
        for path in (settings.home, settings.run_dir, settings.log_dir):
            path.mkdir(parents=True, exist_ok=True)
        ensure_api_credential(settings)
        restart_without_credential(
            settings, chosen([*infrastructure(settings), *workers(settings)]), table, report
        )
        started = start_missing(chosen(infrastructure(settings)), table, report)
        provisioned = only is None or "prefect" in only
        provisioned = provision(settings, report) if provisioned else False
        started += start_missing(chosen(workers(settings)), table, report)
    return UpResult(started=started, components=status(settings), provisioned=provisioned)


def down(
    settings: Settings, *, report: Report = print, components: Sequence[Component] | None = None
) -> list[str]:
    """Stop the processes that ``up`` started, workers first, keeping all data.

    Args:
        settings: The stack.
        report: Receives one progress line at a time.
        components: Stop only these (default: every component).

    Returns:
        The names of the components stopped.
    """
    table = ProcessTable(settings.run_dir)
    stopped = []
    chosen = components if components is not None else all_components(settings)
    with stack_lock(settings):
        for component in reversed(chosen):
            record = table.running(component.name)
            if record is None:
                table.forget(component.name)
                if isinstance(component, DockerEngine) and not component.probe():
                    component.stopped()  # an engine of ours that died unasked left its mounts
                continue
            report(f"  {component.name:<12} stopping (pid {record.pid})")
            timeout = 45.0 if isinstance(component, DockerEngine) else 20.0
            if table.stop(component.name, timeout=timeout, stop_signal=component.stop_signal):
                stopped.append(component.name)
            component.stopped()
        if components is None:
            # etcd members `up` started with another SHIPLINE_ETCD_MEMBERS than this process has, Redis and
            # Prefect's services started with SHIPLINE_PREFECT_SERVICES=split: ours too (services first).
            known = {component.name for component in chosen}
            leftovers = sorted(table.all(), key=lambda record: record.name != "prefect-services")
            for record in leftovers:
                if record.name in known or not SETTING_DEPENDENT.fullmatch(record.name) or not record.alive:
                    continue
                report(f"  {record.name:<12} stopping (pid {record.pid})")
                if table.stop(record.name, timeout=20.0):
                    stopped.append(record.name)
    return stopped
