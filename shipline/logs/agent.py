"""``shipline logs agent``, one per Docker host: every line of every Shipline container, stored exactly once.

The agent finds containers labelled ``shipline.app`` at start, from Docker events and by a rescan every few
seconds, and follows each one's json-file log, rotated files included. Each round reads at most
``read_bytes`` from every file in turn (a container that prints 50 MB/s gets the same share as a quiet one),
turns entries into records, and writes the batch together with the checkpoints that cover it in one store
transaction. A batch the store refuses (down, locked, full) is kept and written again after a back-off;
nothing more is read meanwhile. After a crash the agent resumes at the committed checkpoints: a line is never
stored twice, and none is skipped.

Limits: lines written while the agent is down to a file Docker deletes before the agent is back (rotation
past ``max-file``, or the container removed) cannot be read by anyone; the compose files keep five 10 MB
files per instance so that an agent restart never comes near that.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from shipline.logs.jsonfile import FileIdentity, TailedFile, identify, same_file
from shipline.logs.records import Checkpoint, LogRecord, Tags
from shipline.logs.store import LogStore, LogStoreError

log = logging.getLogger("shipline.logs.agent")

READY = "logs agent ready"
"""Logged once the first scan is done (the stack's probe waits for it)."""


@dataclass(frozen=True, slots=True)
class WatchedContainer:
    """A container whose log the agent follows."""

    id: str
    log_path: str
    tags: Tags


class ContainerSource(Protocol):
    """Where containers come from: the Docker Engine (``DockerContainers``), or files in tests."""

    def containers(self) -> list[WatchedContainer]:
        """Every Shipline container on the host, running or stopped."""
        ...

    def events(self, stop: threading.Event) -> Iterator[tuple[str, str]]:
        """``(action, container id)`` for start, die and destroy, until ``stop`` is set."""
        ...

    def owns(self, path: str) -> bool:
        """True if the log file at ``path`` is this host's: another host's agent keeps its checkpoints."""
        ...


class DockerContainers:
    """Containers labelled ``shipline.app`` on a Docker Engine."""

    def __init__(self, docker_url: str, *, host: str | None = None) -> None:
        from shipline.docker import docker_client

        self.client = docker_client(docker_url)
        self.host = host or socket.gethostname()
        self._logs_dir: str | None = None

    def owns(self, path: str) -> bool:
        if self._logs_dir is None:  # every container's log lies under its engine's data root
            self._logs_dir = f"{str(self.client.info()['DockerRootDir']).rstrip('/')}/containers/"
        return path.startswith(self._logs_dir)

    def containers(self) -> list[WatchedContainer]:
        found = []
        for container in self.client.containers.list(all=True, filters={"label": "shipline.app"}):
            watched = self._watched(container.attrs)
            if watched is not None:
                found.append(watched)
        return found

    def _watched(self, attrs: dict[str, object]) -> WatchedContainer | None:
        config = attrs.get("Config")
        labels = config.get("Labels") if isinstance(config, dict) else None
        log_path = attrs.get("LogPath")
        if not isinstance(labels, dict) or not isinstance(log_path, str) or not log_path:
            return None  # another logging driver: nothing on disk to follow
        port = labels.get("shipline.port", "")
        tags = Tags(
            app=str(labels.get("shipline.app", "")),
            env=str(labels.get("shipline.env", "")),
            release=str(labels.get("shipline.release", "")),
            port=int(port) if str(port).isdigit() else None,
            container=str(attrs.get("Id", ""))[:12],
            host=self.host,
        )
        return WatchedContainer(id=str(attrs.get("Id", "")), log_path=log_path, tags=tags)

    def events(self, stop: threading.Event) -> Iterator[tuple[str, str]]:
        filters = {"type": "container", "label": "shipline.app", "event": ["start", "die", "destroy"]}
        stream = self.client.events(decode=True, filters=filters)
        try:
            for event in stream:
                if stop.is_set():
                    return
                yield str(event.get("Action", "")), str(event.get("id", ""))
        finally:
            stream.close()


@dataclass
class AgentStats:
    lines: int = 0
    bytes: int = 0
    batches: int = 0
    store_errors: int = 0
    last_error: str = ""


@dataclass
class _Container:
    watched: WatchedContainer
    stopping: bool = False
    gone: bool = False
    files: list[str] = field(default_factory=list)


def _rotated_paths(log_path: str) -> list[str]:
    """The container's log files, oldest first (``x.log.3``, ``x.log.2``, ``x.log.1``, ``x.log``)."""
    directory, name = os.path.split(log_path)
    pattern = re.compile(re.escape(name) + r"(?:\.(\d+))?$")
    found: list[tuple[int, str]] = []
    try:
        entries = os.listdir(directory)
    except OSError:
        return []
    for entry in entries:
        match = pattern.match(entry)
        if match:
            found.append((int(match.group(1) or 0), os.path.join(directory, entry)))
    return [path for _, path in sorted(found, reverse=True)]


class Agent:
    """Follows every watched container's log into ``store``.

    Args:
        store: Where records and checkpoints go.
        source: The containers.
        poll_seconds: Pause of a round that found nothing new.
        read_bytes: Each file's share of a round.
        batch_bytes: A batch is written once this much has been read (or nothing more is there).
        rescan_seconds: How often the container list is read again besides Docker's events.
        sleep: How to wait (tests pass a fake clock).
    """

    def __init__(
        self,
        store: LogStore,
        source: ContainerSource,
        *,
        poll_seconds: float = 0.1,
        read_bytes: int = 64 * 1024,
        batch_bytes: int = 2 * 1024 * 1024,
        rescan_seconds: float = 5.0,
        max_backoff: float = 5.0,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.store = store
        self.source = source
        self.poll_seconds = poll_seconds
        self.read_bytes = read_bytes
        self.batch_bytes = batch_bytes
        self.rescan_seconds = rescan_seconds
        self.max_backoff = max_backoff
        self.sleep = sleep
        self.stats = AgentStats()
        self.files: dict[str, TailedFile] = {}
        self.containers: dict[str, _Container] = {}
        self._checkpoints: dict[tuple[int, int], list[Checkpoint]] = {}
        self._unsaved: tuple[list[LogRecord], list[Checkpoint], list[TailedFile]] | None = None
        self._events: queue.Queue[tuple[str, str]] = queue.Queue()
        self._last_scan = 0.0
        self._backoff = 0.0
        self._drained: set[str] = set()
        """Files read to their end and closed (rotated away): not opened again while they stay so."""

    # -- containers and files ---------------------------------------------------------------------------

    def start(self) -> None:
        """Load the checkpoints and open every container's files (raises ``LogStoreError`` if the store is
        away: the caller tries again)."""
        self._checkpoints = {}
        for checkpoint in self.store.checkpoints().values():
            identity = FileIdentity.parse(checkpoint.source)
            if identity is not None:
                self._checkpoints.setdefault((identity.device, identity.inode), []).append(checkpoint)
        self.rescan()
        matched = {f.identity.key for f in self.files.values()}
        stale = [
            c.source
            for group in self._checkpoints.values()
            for c in group
            if c.source not in matched and self.source.owns(c.path)
        ]
        if stale:  # this host's files deleted while the agent was away (their containers removed)
            self.store.forget_checkpoints(stale)

    def rescan(self) -> None:
        self._last_scan = time.monotonic()
        listed = {c.id: c for c in self.source.containers()}
        for watched in listed.values():
            state = self.containers.get(watched.id)
            if state is None:
                state = self.containers[watched.id] = _Container(watched)
            self._open_files(state)
        for container_id, state in self.containers.items():
            if container_id not in listed:
                state.gone = True

    def _open_files(self, state: _Container) -> None:
        for path in _rotated_paths(state.watched.log_path):
            if any(self.files[key].path == path and self._is_at(key, path) for key in state.files):
                continue
            try:
                handle = open(path, "rb")  # noqa: SIM115 - held open across rounds, closed when drained
            except OSError:
                continue
            tailed = self._resume(handle, path, state.watched)
            if tailed is None or tailed.identity.key in self.files:
                if tailed is not None:
                    self.files[tailed.identity.key].path = path  # renamed by a rotation
                handle.close()
                continue
            self.files[tailed.identity.key] = tailed
            state.files.append(tailed.identity.key)

    def _is_at(self, key: str, path: str) -> bool:
        identity = self.files[key].identity
        try:
            stat = os.stat(path)
        except OSError:
            return False
        return (stat.st_dev, stat.st_ino) == (identity.device, identity.inode)

    def _resume(self, binary: BinaryIO, path: str, watched: WatchedContainer) -> TailedFile | None:
        stat = os.fstat(binary.fileno())
        for checkpoint in self._checkpoints.get((stat.st_dev, stat.st_ino), []):
            identity = FileIdentity.parse(checkpoint.source)
            if identity is not None and same_file(binary, identity):
                if checkpoint.source in self._drained and checkpoint.offset >= stat.st_size:
                    return None  # rotated away and read to its end already
                return TailedFile(path, binary, identity, watched.id, watched.tags, offset=checkpoint.offset)
        identity = identify(binary)
        if identity is None:
            return None  # empty: identified once it has a first line
        return TailedFile(path, binary, identity, watched.id, watched.tags)

    def _current_identity(self, state: _Container) -> tuple[int, int] | None:
        try:
            stat = os.stat(state.watched.log_path)
        except OSError:
            return None
        return stat.st_dev, stat.st_ino

    def _handle_events(self) -> None:
        while True:
            try:
                action, container_id = self._events.get_nowait()
            except queue.Empty:
                return
            if action == "start":
                if container_id in self.containers:
                    self.containers[container_id].stopping = False
                self.rescan()
            elif action in {"die", "destroy"} and container_id in self.containers:
                state = self.containers[container_id]
                state.stopping = True
                state.gone = state.gone or action == "destroy"

    # -- one round --------------------------------------------------------------------------------------

    def step(self) -> int:
        """Read what is new and store it; returns the number of records stored (0: nothing new)."""
        if self._unsaved is not None:
            return self._save(*self._unsaved)
        self._handle_events()
        if time.monotonic() - self._last_scan >= self.rescan_seconds:
            self.rescan()
        for state in self.containers.values():
            if not state.gone:
                current = self._current_identity(state)
                known = {(self.files[k].identity.device, self.files[k].identity.inode) for k in state.files}
                if current is not None and current not in known:
                    self._open_files(state)  # rotated, or the first line of a new file
        records: list[LogRecord] = []
        touched: dict[str, TailedFile] = {}
        read = 0
        while read < self.batch_bytes:
            progressed = False
            for key, tailed in list(self.files.items()):
                before = tailed.read_to
                new = tailed.read(self.read_bytes)
                if tailed.read_to != before:
                    progressed = True
                    touched[key] = tailed
                    read += tailed.read_to - before
                    records.extend(new)
            if not progressed:
                break
        finished = self._finished_files(progressed=read > 0)
        for tailed in finished:
            records.extend(tailed.finish())
            touched[tailed.identity.key] = tailed
        checkpoints = [
            Checkpoint(source=t.identity.key, path=t.path, container=t.container, offset=t.committed_offset)
            for t in touched.values()
        ]
        if not checkpoints:
            return 0
        return self._save(records, checkpoints, finished)

    def _finished_files(self, *, progressed: bool) -> list[TailedFile]:
        """Files read to their end that will not grow: rotated away, or of a stopped or removed container."""
        finished = []
        for state in self.containers.values():
            current = None if state.gone else self._current_identity(state)
            for key in state.files:
                tailed = self.files[key]
                at_end = tailed.read_to >= tailed.size()
                if not at_end:
                    continue
                rotated_away = current is not None and current != (
                    tailed.identity.device,
                    tailed.identity.inode,
                )
                if rotated_away or state.gone or (state.stopping and tailed.pending):
                    finished.append(tailed)
        return finished

    def _save(
        self, records: list[LogRecord], checkpoints: list[Checkpoint], finished: list[TailedFile]
    ) -> int:
        try:
            self.store.write(records, checkpoints)
        except LogStoreError as exc:
            self._unsaved = (records, checkpoints, finished)
            self.stats.store_errors += 1
            self._backoff = min(self.max_backoff, max(0.2, self._backoff * 2))
            if self.stats.last_error != exc.message:
                log.warning("store refused a batch of %d lines (%s); trying again", len(records), exc.message)
            self.stats.last_error = exc.message
            self.sleep(self._backoff)
            return 0
        if self._unsaved is not None:
            log.info(
                "store took the kept batch of %d lines after %d refusals",
                len(records),
                self.stats.store_errors,
            )
        self._unsaved = None
        self._backoff = 0.0
        for checkpoint in checkpoints:
            identity = FileIdentity.parse(checkpoint.source)
            if identity is not None:
                group = self._checkpoints.setdefault((identity.device, identity.inode), [])
                group[:] = [c for c in group if c.source != checkpoint.source] + [checkpoint]
        self.stats.last_error = ""
        self.stats.lines += len(records)
        self.stats.bytes += sum(len(r.message) for r in records)
        self.stats.batches += 1
        self._close(finished)
        return len(records)

    def _close(self, finished: list[TailedFile]) -> None:
        forget: list[str] = []
        for tailed in finished:
            state = self.containers.get(tailed.container)
            current = None if state is None or state.gone else self._current_identity(state)
            if current == (tailed.identity.device, tailed.identity.inode):
                continue  # a stopped container's current file: it may start again and append
            self.files.pop(tailed.identity.key, None)
            tailed.handle.close()
            self._drained.add(tailed.identity.key)
            if state is not None:
                state.files.remove(tailed.identity.key)
                if state.gone:
                    forget.append(tailed.identity.key)
        for container_id in [cid for cid, s in self.containers.items() if s.gone and not s.files]:
            del self.containers[container_id]
        if forget:
            for key in forget:
                self._drained.discard(key)
            try:
                self.store.forget_checkpoints(forget)
            except LogStoreError as exc:  # harmless: forgotten at the next start
                log.warning("could not forget checkpoints of removed files: %s", exc.message)

    # -- running ----------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Follow logs until ``stop`` is set; the batch in hand is stored before returning."""
        while not stop.is_set():
            try:
                self.start()
                break
            except LogStoreError as exc:
                log.warning("log store not ready: %s; trying again", exc.message)
                stop.wait(min(self.max_backoff, 1.0))
        else:
            return
        events = threading.Thread(target=self._follow_events, args=(stop,), name="docker-events", daemon=True)
        events.start()
        log.info("%s: %d containers, %d files", READY, len(self.containers), len(self.files))
        reported = time.monotonic()
        while not stop.is_set():
            stored = self.step()
            if time.monotonic() - reported >= 60:
                reported = time.monotonic()
                log.info("stored %d lines, %.1f MiB so far", self.stats.lines, self.stats.bytes / 2**20)
            if stored == 0 and self._unsaved is None:
                stop.wait(self.poll_seconds)
        for _ in range(10):  # the kept batch, if any, gets a few more tries before the agent exits
            if self._unsaved is None:
                break
            self.step()

    def _follow_events(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                for event in self.source.events(stop):
                    self._events.put(event)
            except Exception as exc:  # the engine restarted: the periodic rescan covers the gap
                log.warning("Docker events stopped (%s); reconnecting", exc)
                stop.wait(1.0)
