"""Docker json-file logs written by hand, and containers that are only such files: the agent's unit tests
drive it through these exactly as the Docker Engine would (same entry format, same rotation by rename)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from shipline.logs.agent import WatchedContainer
from shipline.logs.records import Tags

SPLIT = 16 * 1024
"""Docker splits a longer line into entries of this size, all but the last without a newline."""


class JsonFileLog:
    """A container's ``ID-json.log`` as the json-file driver writes and rotates it."""

    def __init__(self, directory: Path, container_id: str) -> None:
        self.dir = directory / container_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / f"{container_id}-json.log"
        self.path.touch()

    def entry(self, text: str, stream: str = "stdout") -> bytes:
        moment = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"
        return (json.dumps({"log": text, "stream": stream, "time": moment}) + "\n").encode()

    def print(self, *lines: str, stream: str = "stdout") -> None:
        """Append lines as the driver does, splitting long ones."""
        entries: list[bytes] = []
        for line in lines:
            text = line + "\n"
            while len(text) > SPLIT:
                entries.append(self.entry(text[:SPLIT], stream))
                text = text[SPLIT:]
            entries.append(self.entry(text, stream))
        with self.path.open("ab") as handle:
            handle.write(b"".join(entries))

    def raw(self, data: bytes) -> None:
        with self.path.open("ab") as handle:
            handle.write(data)

    def rotate(self, keep: int = 5) -> None:
        """``x.log`` → ``x.log.1`` (→ ``.2`` …), then a new empty ``x.log``; the oldest past ``keep`` goes."""
        for index in range(keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                if index + 1 >= keep:
                    older.unlink()
                else:
                    older.rename(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        self.path.touch()


class FileContainers:
    """A ContainerSource of hand-written logs; ``remove`` deletes a container's files, as Docker does."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.logs: dict[str, tuple[JsonFileLog, Tags]] = {}

    def add(self, container_id: str, app: str = "shop", env: str = "pre", port: int = 20001) -> JsonFileLog:
        log = JsonFileLog(self.directory, container_id)
        tags = Tags(app=app, env=env, release="1", port=port, container=container_id[:12], host="h1")
        self.logs[container_id] = (log, tags)
        return log

    def remove(self, container_id: str) -> None:
        log, _ = self.logs.pop(container_id)
        for path in log.dir.iterdir():
            path.unlink()
        os.rmdir(log.dir)

    def containers(self) -> list[WatchedContainer]:
        return [
            WatchedContainer(id=cid, log_path=str(log.path), tags=tags)
            for cid, (log, tags) in self.logs.items()
        ]

    def events(self, stop: threading.Event) -> Iterator[tuple[str, str]]:
        stop.wait()
        return iter(())

    def owns(self, path: str) -> bool:
        return path.startswith(f"{self.directory}/")
