"""The logs bench's containers: json-file logs written as Docker's driver writes them, varied log lines,
and the two processes of the steady-load harness (``python -m bench.logs_files agent|write``).

The bench does not import ``tests/``: this writer is its own, small and fast (it writes tens of MB).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from shipline.logs.agent import Agent, WatchedContainer
from shipline.logs.records import Tags
from shipline.logs.sqlite import SqliteStore
from shipline.logs.store import Tokenizer

APPS = 20
_VOCABULARY = (
    "order payment invoice customer request response timeout refused connection database cache worker "
    "queue retry backoff upstream downstream session token expired invalid started stopped finished "
    "failed success warning error debug shipment warehouse inventory checkout cart discount coupon "
    "profile account password reset email notification webhook delivery release rollback deploy health "
    "probe latency throughput memory pressure garbage collector thread pool socket handshake certificate "
    "renewal scheduler cron batch export import report metrics tracing span parent child replica leader "
    "follower election snapshot compaction partition offset consumer producer topic broker"
)
WORDS = tuple(_VOCABULARY.split())
CHINESE = (
    "连接数据库失败",
    "订单已创建",
    "用户登录成功",
    "支付超时",
    "库存不足",
    "请求被拒绝",
    "缓存未命中",
    "服务启动完成",
    "配置文件已加载",
    "消息队列积压",
)
SERVICES = ("payments", "orders", "users", "search", "billing", "catalog", "gateway", "auth")


def app_name(index: int) -> str:
    return f"app{index % APPS:02d}"


def message(rng: random.Random, size: int) -> str:
    """A log line of about ``size`` characters: a varied template padded with words (some Chinese)."""
    kind = rng.randrange(6)
    ident = f"{rng.getrandbits(40):010x}"
    ms = rng.randrange(1, 5000)
    if kind == 0:
        head = f"GET /api/v1/{rng.choice(SERVICES)}/{ident} {rng.choice((200, 200, 201, 404, 500))} in {ms}ms"
    elif kind == 1:
        head = f"ERROR {rng.choice(WORDS)} talking to {rng.choice(SERVICES)} after {ms}ms (attempt {ms % 5})"
    elif kind == 2:
        head = f"{rng.choice(CHINESE)} id={ident} 用户={ms} {rng.choice(CHINESE)}"
    elif kind == 3:
        head = json.dumps(
            {"level": rng.choice(("info", "warn", "error")), "msg": rng.choice(WORDS), "id": ident, "ms": ms},
            separators=(",", ":"),
        )
    elif kind == 4:
        head = f"INFO {rng.choice(WORDS)} {rng.choice(WORDS)} file=/srv/{rng.choice(SERVICES)}/{ident}.log"
    else:
        head = f"WARN {rng.choice(WORDS)} {rng.choice(WORDS)} {rng.choice(WORDS)} trace={ident}"
    if kind == 3:
        return head  # a JSON line stays one object
    words = [head]
    length = len(head)
    while length < size:
        word = rng.choice(CHINESE) if rng.random() < 0.05 else rng.choice(WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[: max(size, len(head))]


def docker_time(moment: float) -> str:
    """Docker's RFC 3339 time with nanoseconds."""
    stamp = datetime.fromtimestamp(moment, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def entries(lines: list[str], moment: float) -> bytes:
    """json-file entries for ``lines``, all stamped ``moment`` (Docker's own compact encoding)."""
    stamp = docker_time(moment)
    return b"".join(
        (
            json.dumps(
                {"log": line + "\n", "stream": "stdout", "time": stamp},
                ensure_ascii=False,
                separators=(",", ":"),
            )
            + "\n"
        ).encode()
        for line in lines
    )


def log_path(directory: Path, container: str) -> Path:
    return directory / container / f"{container}-json.log"


def write_logs(directory: Path, *, containers: int, total_bytes: int, line_size: int, seed: int = 7) -> int:
    """Pre-write ``total_bytes`` of json-file logs across ``containers``; returns the number of lines."""
    rng = random.Random(seed)
    pool = [message(rng, line_size) for _ in range(2000)]
    handles = []
    for index in range(containers):
        path = log_path(directory, f"c{index:02d}")
        path.parent.mkdir(parents=True, exist_ok=True)
        handles.append(path.open("ab"))
    written = lines = 0
    moment = time.time() - 60
    try:
        while written < total_bytes:
            for handle in handles:
                chunk = [f"n={lines + i} {pool[(lines + i) % len(pool)]}" for i in range(100)]
                data = entries(chunk, moment)
                handle.write(data)
                written += len(data)
                lines += len(chunk)
            moment += 0.001
    finally:
        for handle in handles:
            handle.close()
    return lines


class BenchContainers:
    """A ContainerSource: every directory under ``directory`` is a container with a json-file log."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def containers(self) -> list[WatchedContainer]:
        found = []
        for index, entry in enumerate(sorted(os.listdir(self.directory))):
            tags = Tags(
                app=app_name(index), env="bench", release="1", port=20000 + index, container=entry, host="h1"
            )
            found.append(WatchedContainer(id=entry, log_path=str(log_path(self.directory, entry)), tags=tags))
        return found

    def events(self, stop: threading.Event) -> Iterator[tuple[str, str]]:
        stop.wait()
        return iter(())

    def owns(self, path: str) -> bool:
        return path.startswith(f"{self.directory}/")


def _agent(directory: Path, store_path: Path, tokenizer: Tokenizer) -> None:
    """Run the agent on ``directory`` until SIGTERM; prints ``ready`` once it watches every container."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    with SqliteStore(store_path, tokenizer=tokenizer) as store:
        agent = Agent(store, BenchContainers(directory))
        runner = threading.Thread(target=agent.run, args=(stop,))
        runner.start()
        while not agent.containers and not stop.is_set():
            time.sleep(0.01)
        print("ready", flush=True)
        runner.join()
        print(json.dumps({"lines": agent.stats.lines, "batches": agent.stats.batches}), flush=True)


def _write(directory: Path, *, containers: int, seconds: float, rate: int, line_size: int) -> None:
    """Append to every container's log at ``rate`` bytes/s each, in bursts every 100 ms; one line a
    second per container is a marker ``benchmark-mark-N written=UNIX_TIME``."""
    rng = random.Random(11)
    pool = [message(rng, line_size) for _ in range(500)]
    paths = [log_path(directory, f"c{index:02d}") for index in range(containers)]
    per_burst = max(1, rate // 10 // (line_size + 80))
    started = time.monotonic()
    tick = 0
    marks = 0
    while time.monotonic() - started < seconds:
        for index, path in enumerate(paths):
            lines = [pool[(tick * per_burst + i + index) % len(pool)] for i in range(per_burst)]
            now = time.time()
            if tick % 10 == index % 10:
                lines[-1] = f"benchmark-mark-{marks} written={now:.6f} {lines[-1][:line_size]}"
                marks += 1
            with path.open("ab") as handle:
                handle.write(entries(lines, now))
        tick += 1
        pause = started + tick * 0.1 - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    print(json.dumps({"marks": marks}), flush=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.logs_files")
    commands = parser.add_subparsers(dest="command", required=True)
    agent = commands.add_parser("agent")
    agent.add_argument("directory", type=Path)
    agent.add_argument("store", type=Path)
    agent.add_argument("--tokenizer", default="trigram", choices=("trigram", "unicode61"))
    write = commands.add_parser("write")
    write.add_argument("directory", type=Path)
    write.add_argument("--containers", type=int, default=10)
    write.add_argument("--seconds", type=float, default=20.0)
    write.add_argument("--rate", type=int, default=100_000)
    write.add_argument("--line-size", type=int, default=1000)
    args = parser.parse_args(argv)
    if args.command == "agent":
        _agent(args.directory, args.store, args.tokenizer)
    else:
        _write(
            args.directory,
            containers=args.containers,
            seconds=args.seconds,
            rate=args.rate,
            line_size=args.line_size,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
