"""``shipline discover``: nginx follows the instances registered in etcd, within milliseconds.

The daemon reads every instance key at one revision, renders, then watches from that revision + 1 — no
polling. A change is rendered at once (leading edge); further changes within ``window`` seconds are
coalesced into one more render at the end of the window, so a burst of registrations is a handful of
reloads, not hundreds. A compacted revision, an etcd restart or any broken watch leads to a fresh read and
a new watch. Every render goes through ``NginxConfig.apply``: checked with ``nginx -t``, reloaded only when
something changed, the last good config kept when the check fails.

Metrics (Prometheus text) and health are served on ``http://{host}:{discover_port}/metrics|/healthz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from aetcd.exceptions import ClientError
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from shipline.config import Settings
from shipline.discovery.instances import Instance, parse_key, parse_retired_key
from shipline.discovery.nginx import NginxConfig, file_name, render_app
from shipline.errors import DiscoveryError, ServiceUnavailableError
from shipline.etcd_client import connect

log = logging.getLogger("shipline.discover")
MARKER = "# Rendered by shipline discover"


class Metrics:
    """The daemon's counters and its change → reload latency, exposed through ``prometheus_client``.

    Each instance has a registry of its own, so that several daemons (tests run a few in one process)
    never share a counter.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.renders = Counter(
            "shipline_discover_renders", "Renders of the nginx files", registry=self.registry
        )
        self.reloads = Counter("shipline_discover_reloads", "nginx reloads", registry=self.registry)
        self.failures = Counter(
            "shipline_discover_render_failures",
            "Renders nginx rejected, wholly or in part",
            registry=self.registry,
        )
        self.resyncs = Counter(
            "shipline_discover_resyncs",
            "Full re-reads of etcd (start, outage, compaction)",
            registry=self.registry,
        )
        self.latency = Histogram(
            "shipline_discover_change_to_reload_seconds",
            "From the first change of a render to nginx reloaded with it",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )

    def value(self, name: str) -> float:
        """A sample's current value, e.g. ``value("shipline_discover_resyncs_total")``."""
        return self.registry.get_sample_value(name) or 0.0

    def text(self) -> str:
        """The Prometheus text exposition."""
        return generate_latest(self.registry).decode()


class Discovery:
    """Instances in etcd → nginx files, for as long as ``run`` runs.

    Args:
        settings: The stack (etcd URL, nginx locations, discover port).
        window: The quiet gap: a change that follows a quiet ``window`` renders at once; changes that come
            closer together (a burst) are rendered once they pause for ``window``,
        max_wait: or at the latest this long after the first of them, so that a long burst is still seen.
        template: The nginx template (default templates/nginx/app.conf.j2).

    A burst of any length is thus one render at its first change and one after it ends (consul-template's
    ``wait {min, max}``), where a fixed window from the first change would render once per window.
    """

    def __init__(
        self, settings: Settings, *, window: float = 0.1, max_wait: float = 1.0, template: Path | None = None
    ) -> None:
        self.settings = settings
        self.window = window
        self.max_wait = max_wait
        self.template = template
        self.nginx = NginxConfig(settings)
        self.metrics = Metrics()
        self.instances: dict[str, Instance] = {}
        self.known: set[tuple[str, str]] = set()
        self.retired: set[tuple[str, str]] = set()
        """Apps taken out of an environment (``shipline retire``): their files go, not to a 503 page."""
        self.watching = False
        self._pending: asyncio.Task[None] | None = None
        self._oldest_change: float | None = None
        self._last_change = float("-inf")
        self._dirty = False

    # State
    def _previously_rendered(self) -> set[tuple[str, str]]:
        found = set()
        for path in self.settings.nginx_conf_dir.glob("*_*.conf"):
            try:
                if path.read_text().startswith(MARKER):
                    app, env = path.stem.rsplit("_", 1)
                    found.add((app, env))
            except (OSError, ValueError):
                continue
        return found

    async def _resync(self, client: object) -> int:
        result = await client.get_prefix(b"/")  # type: ignore[attr-defined]
        self.instances = {}
        self.retired = set()
        for kv in result:
            key = kv.key.decode()
            if (instance := parse_key(key)) is not None:
                self.instances[key] = instance
            elif (retired := parse_retired_key(key)) is not None:
                self.retired.add(retired)
        self.known |= {(i.app, i.env) for i in self.instances.values()} | self._previously_rendered()
        self.metrics.resyncs.inc()
        self._changed()
        return int(result.header.revision)

    def _event(self, key: str, deleted: bool) -> bool:
        instance = parse_key(key)
        if instance is None:
            retired = parse_retired_key(key)
            if retired is None:
                return False
            if deleted:
                self.retired.discard(retired)
            else:
                self.retired.add(retired)
            return True
        if deleted:
            self.instances.pop(key, None)
        else:
            self.instances[key] = instance
            self.known.add((instance.app, instance.env))
        return True

    # Rendering
    def render_files(self) -> dict[str, str]:
        """The nginx file of every known app and environment (503 when it has no instance now).

        An app with no live instance whose file an operator deleted is forgotten: deleting the file of an
        app that is gone is how its server block is retired.
        """
        values = list(self.instances.values())
        live = {(i.app, i.env) for i in values}
        self.known = {
            (app, env)
            for app, env in self.known
            if ((app, env) in live or (self.settings.nginx_conf_dir / file_name(app, env)).exists())
            and (app, env) not in self.retired
        }
        options = {"template": self.template} if self.template else {}
        return {
            file_name(app, env): render_app(app, env, values, settings=self.settings, **options)
            for app, env in sorted(self.known)
        }

    def _changed(self) -> None:
        now = time.monotonic()
        quiet_before = now - self._last_change >= self.window
        self._last_change = now
        if self._oldest_change is None:
            self._oldest_change = now
        self._dirty = True
        if self._pending is not None and not self._pending.done():
            return  # the render task sees the flag, even for a change made while it renders
        self._pending = asyncio.get_running_loop().create_task(self._render_after(debounce=not quiet_before))

    async def _settle(self) -> None:
        """Wait until changes pause for the quiet gap, or the oldest unrendered one is ``max_wait`` old."""
        while True:
            now = time.monotonic()
            oldest = self._oldest_change if self._oldest_change is not None else now
            due = min(self._last_change + self.window, oldest + self.max_wait)
            if now >= due:
                return
            await asyncio.sleep(due - now)

    async def _render_after(self, *, debounce: bool) -> None:
        if debounce:
            await self._settle()
        while self._dirty:
            self._dirty = False
            started, self._oldest_change = self._oldest_change, None
            self.metrics.renders.inc()
            try:
                files = self.render_files()
                retired = [file_name(app, env) for app, env in self.retired]
                reloaded = await asyncio.to_thread(self.nginx.apply, files, retired)
            except DiscoveryError as exc:
                self.metrics.failures.inc()
                log.error("%s", exc)  # retried on the next change
                reloaded = exc.reloaded
            if reloaded:
                self.metrics.reloads.inc()
                if started is not None:
                    self.metrics.latency.observe(time.monotonic() - started)
            if self._dirty:  # changes arrived during this render: one more, once they pause
                await self._settle()

    # The loop
    async def run(self, stop: asyncio.Event) -> None:
        """Watch and render until ``stop`` is set; re-read and re-watch after any failure."""
        backoff = 0.2
        while not stop.is_set():
            try:
                async with connect(self.settings.etcd_url) as client:
                    revision = await self._resync(client)
                    watch = await client.watch_prefix(b"/", start_revision=revision + 1)
                    self.watching, backoff = True, 0.2
                    stopper = asyncio.create_task(stop.wait())
                    try:
                        await self._follow(watch, stopper)
                    finally:
                        stopper.cancel()
                        with contextlib.suppress(ClientError, RuntimeError):
                            await watch.cancel()
            except (ClientError, ServiceUnavailableError, OSError) as exc:
                log.warning("etcd watch interrupted (%s); re-reading from etcd", type(exc).__name__)
            self.watching = False
            if not stop.is_set():
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        if self._pending is not None:
            await asyncio.gather(self._pending, return_exceptions=True)

    async def _follow(self, watch: object, stopper: asyncio.Task[bool]) -> None:
        events = watch.__aiter__()  # type: ignore[attr-defined]
        while True:
            next_event = asyncio.ensure_future(events.__anext__())
            done, _ = await asyncio.wait({next_event, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stopper in done:
                next_event.cancel()
                return
            try:
                event = next_event.result()
            except StopAsyncIteration:
                return
            if self._event(event.kv.key.decode(), deleted=str(event.kind) == "DELETE"):
                self._changed()


async def serve_status(discovery: Discovery, host: str, port: int) -> asyncio.Server:
    """A minimal HTTP endpoint: GET /metrics (Prometheus text), GET /healthz (200 while watching)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = (await reader.readline()).decode(errors="replace").split()
            headers_read = False
            while not headers_read:  # headers are not needed: read up to the blank line
                headers_read = not (await reader.readline()).strip()
            path = request[1] if len(request) > 1 else "/"
            if path == "/metrics":
                status, body = "200 OK", discovery.metrics.text()
            elif path == "/healthz":
                healthy = discovery.watching
                status, body = (
                    ("200 OK", "ok\n") if healthy else ("503 Service Unavailable", "not watching\n")
                )
            else:
                status, body = "404 Not Found", "not found\n"
            data = body.encode()
            head = f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(data)}\r\n"
            writer.write(f"{head}Connection: close\r\n\r\n".encode() + data)
            await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port)
