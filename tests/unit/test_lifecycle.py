"""Start-up and shut-down logic, on small real processes standing in for the stack's servers."""

import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from shipline.config import Settings
from shipline.errors import ComponentStartError, MissingBinaryError, PortInUseError
from shipline.stack.components import Component
from shipline.stack.lifecycle import State, component_status, down, start_missing
from shipline.stack.processes import ProcessRecord, ProcessTable
from tests.waiting import eventually


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class HttpServer(Component):
    """A component that serves a marker page, like the real ones answer their own protocol."""

    marker: str = "fake component"
    program: list[str] | None = None
    start_timeout: float = 10.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def resolve_binary(self) -> str | None:
        return sys.executable if self.binary == "python" else None

    def prepare(self) -> None:
        root = self.settings.home / self.name
        root.mkdir(parents=True, exist_ok=True)
        (root / "index.html").write_text(self.marker)

    def command(self) -> list[str]:
        if self.program is not None:
            return self.program
        root = self.settings.home / self.name
        return [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1", "-d", str(root)]

    def probe(self, record: ProcessRecord | None = None) -> bool:
        try:
            return httpx.get(self.url, timeout=0.5).text == self.marker
        except httpx.HTTPError:
            return False


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


def make(settings: Settings, name: str = "fake", **kwargs: object) -> HttpServer:
    return HttpServer(settings, name=name, binary="python", port=free_port(), **kwargs)  # type: ignore[arg-type]


def test_start_then_nothing_to_start_then_down(settings: Settings) -> None:
    table = ProcessTable(settings.run_dir)
    components = [make(settings, "one"), make(settings, "two")]
    lines: list[str] = []
    assert start_missing(components, table, lines.append) == ["one", "two"]
    assert all(component_status(c, table).state is State.UP for c in components)
    assert start_missing(components, table, lines.append) == []
    assert sum("already running" in line for line in lines) == 2
    pids = [table.running(c.name).pid for c in components]  # type: ignore[union-attr]
    assert down(settings, components=components, report=lines.append) == ["two", "one"]
    assert all(component_status(c, table).state is State.DOWN for c in components)
    assert all(not Path(f"/proc/{pid}").exists() or table.get("one") is None for pid in pids)


def test_component_answering_but_not_ours_is_left_alone(settings: Settings) -> None:
    outside = ProcessTable(settings.home / "someone-else")
    component = make(settings)
    component.prepare()
    stranger = outside.spawn("stranger", component.command(), log=settings.home / "stranger.log")
    try:
        assert eventually(component.probe, timeout=10, what="the stranger answering")
        table = ProcessTable(settings.run_dir)
        assert start_missing([component], table, lambda _: None) == []
        status = component_status(component, table)
        assert (status.state, status.managed) == (State.UP, False)
        assert down(settings, components=[component], report=lambda _: None) == []
        assert stranger.alive
    finally:
        outside.stop("stranger")


def test_port_held_by_another_program_is_named(settings: Settings) -> None:
    component = make(settings)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", component.port or 0))
        squatter.listen()
        with pytest.raises(PortInUseError) as caught:
            start_missing([component], ProcessTable(settings.run_dir), lambda _: None)
    assert f"port {component.port} is held by" in caught.value.message
    assert "SHIPLINE_FAKE_PORT" in (caught.value.hint or "")


def test_missing_program_names_the_package(settings: Settings) -> None:
    component = make(settings)
    component.binary, component.package = "no-such-program", "no-such-package"
    with pytest.raises(MissingBinaryError) as caught:
        start_missing([component], ProcessTable(settings.run_dir), lambda _: None)
    assert "'no-such-program' is not installed" in caught.value.message
    assert "no-such-package" in (caught.value.hint or "")


def test_process_that_exits_fails_fast_with_its_log(settings: Settings) -> None:
    program = [sys.executable, "-c", "import sys; print('bad config line 3'); sys.exit(2)"]
    component = make(settings, program=program, start_timeout=60.0)
    with pytest.raises(ComponentStartError) as caught:
        start_missing([component], ProcessTable(settings.run_dir), lambda _: None)
    assert "exited during start-up" in caught.value.message
    assert "bad config line 3" in caught.value.message
    assert str(component.log) in caught.value.message


def test_process_that_never_answers_times_out(settings: Settings) -> None:
    program = [sys.executable, "-c", "import time; time.sleep(30)"]
    component = make(settings, program=program, start_timeout=0.5)
    table = ProcessTable(settings.run_dir)
    with pytest.raises(ComponentStartError, match=r"no answer at .* within"):
        start_missing([component], table, lambda _: None)
    # The hung process was stopped, so the next `up` starts it afresh.
    assert table.get(component.name) is None


def test_down_stops_the_etcd_members_of_a_cluster_size_it_was_not_given(tmp_path: Path) -> None:
    # `up` ran with SHIPLINE_ETCD_MEMBERS=3; `down` runs without it: its members are ours all the same.
    settings = Settings(home=tmp_path / "home", etcd_members=1)
    table = ProcessTable(settings.run_dir)
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    members = [table.spawn(f"etcd-{i}", sleep, log=settings.log_dir / f"etcd-{i}.log") for i in (1, 2, 3)]
    stranger = table.spawn("etcdish", sleep, log=settings.log_dir / "etcdish.log")
    try:
        assert sorted(down(settings, report=lambda _: None)) == ["etcd-1", "etcd-2", "etcd-3"]
        assert not any(member.alive for member in members)
        assert stranger.alive, "only etcd members' names are taken for members"
    finally:
        table.stop("etcdish", timeout=5)
