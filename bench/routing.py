"""Routing, in each mode (dynamic: nginx's Lua table; template: a file per app + reload), on an nginx and a
``shipline discover`` process of their own, driven by a harness that shares no code with discover.

- Keys are written through etcd's HTTP/JSON gateway (``/v3/kv/put``, ``/v3/kv/deleterange``), not the
  client library discover uses.
- Change → served: an app moves from one backend to the next (put the new key, delete the old), a quiet
  QUIET_SECONDS after the previous change was served; the latency runs from the put until a request through
  nginx reaches the new backend. Changes alternate between two probes: a new connection per request (as
  curl does) and one kept-alive connection for the whole series (as a browser or a service client does).
- Burst: BURST registrations of real backends, paced over BURST_SECONDS; reloads are counted from nginx's
  worker processes (each reload starts a new generation), sampled every 2 ms, not from discover's metric;
  afterwards every backend must be reached through nginx.
- Dynamic mode only: nginx stopped and started again (its table is lost with it), and reloaded by someone
  else (SIGHUP): the time until the app is served again.

Every request goes to loopback. Counts and durations are bounded.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from shipline.config import Settings
from shipline.discovery.instances import retired_key
from shipline.discovery.routes import Mode, lua_available, running_mode
from shipline.etcd_client import http_tls, read_credentials
from shipline.stack.lifecycle import down, up
from shipline.stack.processes import ProcessTable
from tests.images import free_ports

CHANGES = 100  # per probe kind and mode
QUIET_SECONDS = 0.25
BURST, BURST_SECONDS = 200, 0.4
RESTARTS = 3


class _Port(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per response, sent at once: headers and body written apart meet Nagle's algorithm and
    # nginx's delayed ACK on a kept-alive upstream connection, a 40 ms stall that is the backend's, not
    # routing's.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        body = str(self.server.server_port).encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Quiet."""


@contextlib.contextmanager
def _backends(count: int) -> Iterator[list[int]]:
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Port) for _ in range(count)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield [int(server.server_address[1]) for server in servers]
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def _fresh_client() -> httpx.AsyncClient:
    """A client that opens a new connection for every request, as curl does."""
    return httpx.AsyncClient(trust_env=False, limits=httpx.Limits(max_keepalive_connections=0))


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Gateway:
    """etcd's HTTP/JSON gateway: puts and deletes as any HTTP client would make them, as Shipline's user."""

    def __init__(self, settings: Settings) -> None:
        headers = {}
        member = settings.etcd_client_urls[0]  # the gateway of the first member (TLS where etcd has it)
        verify = http_tls(settings.etcd_tls_files)
        credentials = read_credentials(settings.etcd_credentials_path)
        if credentials is not None:  # etcd answers only its users: a token of Shipline's in every request
            login = {"name": credentials.user, "password": credentials.password.get_secret_value()}
            answer = httpx.post(f"{member}/v3/auth/authenticate", json=login, trust_env=False, verify=verify)
            headers["Authorization"] = str(answer.raise_for_status().json()["token"])
        self.client = httpx.AsyncClient(
            base_url=member,
            verify=verify,
            headers=headers,
            trust_env=False,
            limits=httpx.Limits(max_connections=16),
        )

    async def put(self, key: str, value: str) -> None:
        response = await self.client.post("/v3/kv/put", json={"key": _b64(key), "value": _b64(value)})
        response.raise_for_status()

    async def delete(self, key: str, prefix: bool = False) -> None:
        body = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _b64(key[:-1] + chr(ord(key[-1]) + 1))
        response = await self.client.post("/v3/kv/deleterange", json=body)
        response.raise_for_status()

    async def retire(self, app: str, env: str = "bench") -> None:
        """Take ``app`` off every nginx that follows this etcd, as ``shipline retire`` does: its keys go, a
        retired key drops its route (rather than a 503), and goes too once discover had a moment to act."""
        prefix = f"/{app}_{env.upper()}/"
        await self.delete(prefix, prefix=True)
        await self.put(retired_key(app, env), "bench over")
        await asyncio.sleep(1.0)
        await self.delete(retired_key(app, env))

    async def close(self) -> None:
        await self.client.aclose()


def _key(app: str, port: int) -> tuple[str, str]:
    return f"/{app}_BENCH/127.0.0.1-{port}", f"127.0.0.1:{port}"


def _worker_pids(stack: Settings) -> set[int]:
    master = (stack.nginx_dir / "nginx.pid").read_text().strip()
    found = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError):
            text = status.read_text()
            if f"\nPPid:\t{master}\n" in text and text.startswith("Name:\tnginx"):
                found.add(int(status.parent.name))
    return found


class Private:
    """An nginx (own home, free port, the given mode) on the stack's etcd, and a discover process for it."""

    def __init__(self, main: Settings, mode: Mode, home: Path) -> None:
        nginx_port, discover_port = free_ports(2)
        files = main.etcd_tls_files
        self.settings = Settings(
            home=home,
            nginx_port=nginx_port,
            discover_port=discover_port,
            nginx_mode=mode,
            etcd_port=main.etcd_port,
            etcd_peer_port=main.etcd_peer_port,
            etcd_members=main.etcd_members,
            etcd_tls=main.etcd_tls,
            etcd_ca_file=files.ca if files else None,  # the stack's certificates, wherever they are
            etcd_cert_file=files.cert if files else None,
            etcd_key_file=files.key if files else None,
            etcd_credentials_file=main.etcd_credentials_path,
            docker_socket=main.docker_socket,
        )
        self.discover: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Private:
        s = self.settings
        up(s, only={"nginx"}, report=lambda _: None)
        env = dict(os.environ) | {
            "SHIPLINE_HOME": str(s.home),
            "SHIPLINE_NGINX_PORT": str(s.nginx_port),
            "SHIPLINE_DISCOVER_PORT": str(s.discover_port),
            "SHIPLINE_NGINX_MODE": s.nginx_mode,
            "SHIPLINE_ETCD_PORT": str(s.etcd_port),
            "SHIPLINE_ETCD_PEER_PORT": str(s.etcd_peer_port),
            "SHIPLINE_ETCD_CREDENTIALS_FILE": str(s.etcd_credentials_path),
            **s.etcd_environment(),
        }
        s.log_dir.mkdir(parents=True, exist_ok=True)
        with (s.log_dir / "discover.log").open("ab") as log:
            self.discover = subprocess.Popen(
                [sys.executable, "-m", "shipline", "discover"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://{s.host}:{s.discover_port}/healthz", trust_env=False).text == "ok\n":
                    return self
            time.sleep(0.1)
        self.__exit__()  # nothing of the bench's stays behind
        raise RuntimeError(f"the bench's discover did not answer; see {s.log_dir / 'discover.log'}")

    def __exit__(self, *exc: object) -> None:
        if self.discover is not None:
            self.discover.terminate()
            try:
                self.discover.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.discover.kill()
                self.discover.wait()
        down(self.settings, report=lambda _: None)

    def reloads_metric(self) -> float:
        s = self.settings
        text = httpx.get(f"http://{s.host}:{s.discover_port}/metrics", trust_env=False).text
        name = "shipline_discover_reloads_total "
        return float(next(line.split()[1] for line in text.splitlines() if line.startswith(name)))


async def _served(
    client: httpx.AsyncClient, stack: Settings, app: str, port: int, timeout: float = 10
) -> float:
    """Seconds until a request through nginx reaches ``port``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(httpx.HTTPError):  # template mode: a reload closes kept-alive connections
            response = await client.get(stack.nginx_url, headers={"Host": f"{app}.bench.localhost"})
            if response.text == str(port):
                return time.monotonic() - started
        await asyncio.sleep(0.001)
    raise TimeoutError(f"{app} never served port {port}")


async def _changes(private: Private, gateway: Gateway, app: str) -> dict[str, list[float]]:
    stack = private.settings
    latencies: dict[str, list[float]] = {"new_connection": [], "keep_alive": []}
    with _backends(2 * CHANGES + 1) as ports:
        async with (
            _fresh_client() as fresh,
            httpx.AsyncClient(trust_env=False) as kept,
        ):
            probes = {"new_connection": fresh, "keep_alive": kept}
            await gateway.put(*_key(app, ports[0]))
            await _served(fresh, stack, app, ports[0])
            await _served(kept, stack, app, ports[0])
            for n, (previous, port) in enumerate(itertools.pairwise(ports)):
                kind = "new_connection" if n % 2 == 0 else "keep_alive"
                await asyncio.sleep(QUIET_SECONDS)
                started = time.monotonic()
                await gateway.put(*_key(app, port))
                await gateway.delete(_key(app, previous)[0])
                await _served(probes[kind], stack, app, port)
                latencies[kind].append(time.monotonic() - started)
    await gateway.retire(app)
    return latencies


async def _burst(private: Private, gateway: Gateway, app: str) -> dict[str, float]:
    stack = private.settings
    await asyncio.sleep(1.5)  # the previous phase's last change is applied (a reload, in template mode)
    generations = _worker_pids(stack)
    first = set(generations)
    sampling = True

    async def sample() -> None:
        while sampling:
            generations.update(_worker_pids(stack))
            await asyncio.sleep(0.002)

    metric_before = private.reloads_metric()
    with _backends(BURST) as ports:
        sampler = asyncio.create_task(sample())
        began = time.monotonic()

        async def paced(i: int, port: int) -> None:
            await asyncio.sleep(max(0.0, began + i * BURST_SECONDS / BURST - time.monotonic()))
            await gateway.put(*_key(app, port))

        await asyncio.gather(*(paced(i, port) for i, port in enumerate(ports)))
        burst = time.monotonic() - began
        seen: set[str] = set()
        async with _fresh_client() as fresh:
            deadline = time.monotonic() + 15
            while len(seen) < BURST and time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    response = await fresh.get(stack.nginx_url, headers={"Host": f"{app}.bench.localhost"})
                    if response.status_code == 200:
                        seen.add(response.text)
        all_served = time.monotonic() - began
        await asyncio.sleep(1.5)  # a trailing render would still be this burst's
        sampling = False
        await sampler
    await gateway.retire(app)
    return {
        "burst_seconds": burst,
        "burst_reloads_by_worker_generations": float(len(generations - first)),
        "burst_reloads_by_discover_metric": private.reloads_metric() - metric_before,
        "burst_backends_served": float(len(seen)),
        "burst_all_served_seconds": all_served,
    }


async def _restores(private: Private, gateway: Gateway, app: str) -> dict[str, float]:
    """Dynamic mode: nginx restarted (table lost) or reloaded by someone else; seconds until served again."""
    stack = private.settings
    restarted, reloaded = [], []
    with _backends(1) as (port,):
        await gateway.put(*_key(app, port))
        async with _fresh_client() as fresh:
            await _served(fresh, stack, app, port)
            for _ in range(RESTARTS):
                if not ProcessTable(stack.run_dir).stop("nginx"):
                    raise RuntimeError("the bench's nginx did not stop")
                up(stack, only={"nginx"}, report=lambda _: None)  # returns once nginx answers
                restarted.append(await _served(fresh, stack, app, port))
                master = int((stack.nginx_dir / "nginx.pid").read_text())
                os.kill(master, signal.SIGHUP)
                await asyncio.sleep(0.2)  # the new workers start
                reloaded.append(await _served(fresh, stack, app, port))
    await gateway.retire(app)
    return {
        "restart_served_again_max_ms": 1000 * max(restarted),
        "reload_served_again_max_ms": 1000 * max(reloaded),
    }


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def _mode(main: Settings, mode: Mode, home: Path) -> dict[str, float | str]:
    figures: dict[str, float | str] = {}
    app = f"benchroute-{os.getpid()}-{mode}"
    with Private(main, mode, home) as private:
        assert running_mode(private.settings) == mode
        gateway = Gateway(main)
        try:
            for kind, values in (await _changes(private, gateway, app)).items():
                figures[f"{mode}_{kind}_changes"] = float(len(values))
                figures[f"{mode}_{kind}_p50_ms"] = 1000 * statistics.median(values)
                figures[f"{mode}_{kind}_p99_ms"] = 1000 * _percentile(values, 0.99)
            for name, value in (await _burst(private, gateway, f"{app}-burst")).items():
                figures[f"{mode}_{name}"] = value
            if mode == "dynamic":
                for name, value in (await _restores(private, gateway, f"{app}-restore")).items():
                    figures[f"{mode}_{name}"] = value
        finally:
            await gateway.close()
    return figures


def run(settings: Settings) -> dict[str, float | str]:
    """Both routing modes side by side (dynamic needs Debian's nginx Lua module: `make install`)."""
    figures: dict[str, float | str] = {}
    modes: list[Mode] = ["dynamic", "template"] if lua_available() else ["template"]
    if "dynamic" not in modes:
        figures["dynamic"] = "not measured: nginx's Lua module is not installed"
    with tempfile.TemporaryDirectory(prefix="shipline-bench-routing-") as scratch:
        for mode in modes:
            figures |= asyncio.run(_mode(settings, mode, Path(scratch) / mode))
    return figures
