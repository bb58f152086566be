"""``shipline discover``: nginx follows the instances registered in etcd, within milliseconds.

The daemon reads every instance key at one revision, applies it, then watches from that revision + 1 — no
polling of etcd. A change after a quiet gap is applied at once; changes closer together (a burst) once they
pause, or at the latest ``max_wait`` after the first of them. A compacted revision, an etcd restart or any
broken watch leads to a fresh read and a new watch.

Two ways to apply, following the nginx configuration ``shipline up`` rendered (``routes.running_mode``):

- **dynamic**: the members go into nginx's routing table (``shipline.discovery.routes``) — no reload, for a
  membership change or a new app. The daemon checks four times a second that nginx still holds the table
  it wrote (a restarted nginx starts with an empty one) and writes it all again when not.
- **template**: one file per app rendered from a Jinja2 template through ``NginxConfig.apply`` — checked
  with ``nginx -t``, reloaded only when something changed, the last good config kept when the check fails.

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
from shipline.discovery.routes import Mode, RoutingTable, TableSync, running_mode, upstream_name, weighted
from shipline.discovery.splits import TrafficSplit, parse_split, parse_split_key
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
        self.table_writes = Counter(
            "shipline_discover_table_writes",
            "Writes into nginx's routing table (dynamic mode), full ones included",
            registry=self.registry,
        )
        self.table_restores = Counter(
            "shipline_discover_table_restores",
            "Full writes because nginx held another table than ours (restarted)",
            registry=self.registry,
        )
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
            "shipline_discover_change_to_applied_seconds",
            "From the first change of a render to nginx serving it (reloaded, or its table written)",
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
        window: The quiet gap: a change that follows a quiet ``window`` is applied at once; changes that come
            closer together (a burst) are applied once they pause for ``window``,
        max_wait: or at the latest this long after the first of them, so that a long burst is still seen.
            Defaults: 0.1 / 1.0 s for template mode (each apply is a reload), 0.01 / 0.1 s for dynamic mode.
        template: The nginx template (default templates/nginx/app.conf.j2), template mode only.
        mode: ``dynamic`` or ``template``; default: the mode of the nginx configuration ``up`` rendered.

    In template mode a burst of any length is thus one reload at its first change and one after it ends
    (consul-template's ``wait {min, max}``), where a fixed window from the first change would reload once
    per window.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        window: float | None = None,
        max_wait: float | None = None,
        template: Path | None = None,
        mode: Mode | None = None,
    ) -> None:
        self.settings = settings
        self.mode: Mode = mode or running_mode(settings)
        dynamic = self.mode == "dynamic"
        self.window = window if window is not None else (0.01 if dynamic else 0.1)
        self.max_wait = max_wait if max_wait is not None else (0.1 if dynamic else 1.0)
        self.template = template
        self.nginx = NginxConfig(settings)
        self.table = TableSync(RoutingTable(settings.nginx_admin_socket)) if dynamic else None
        self.metrics = Metrics()
        self.instances: dict[str, Instance] = {}
        self.known: set[tuple[str, str]] = set()
        self.retired: set[tuple[str, str]] = set()
        """Apps taken out of an environment (``shipline retire``): their routes go, not to a 503 page."""
        self.splits: dict[tuple[str, str], TrafficSplit] = {}
        """Canaries (``/shipline/canary/{app}/{env}``): their members take a share of the app's requests."""
        self.watching = False
        self._pending: asyncio.Task[None] | None = None
        self._oldest_change: float | None = None
        self._last_change = float("-inf")
        self._dirty = False
        self._adopted = False
        self.mode_changed = False
        """The nginx configuration changed mode while running: ``run`` returned so as to start again."""
        """Dynamic mode: the table's and the old template files' apps were taken in once."""

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
        self.splits = {}
        for kv in result:
            key = kv.key.decode()
            if (instance := parse_key(key)) is not None:
                self.instances[key] = instance
            elif (retired := parse_retired_key(key)) is not None:
                self.retired.add(retired)
            elif (split := parse_split_key(key)) is not None and (value := parse_split(kv.value)) is not None:
                self.splits[split] = value
        self.known |= {(i.app, i.env) for i in self.instances.values()} | self._previously_rendered()
        self.metrics.resyncs.inc()
        self._changed()
        return int(result.header.revision)

    def _event(self, key: str, deleted: bool, value: bytes = b"") -> bool:
        instance = parse_key(key)
        if instance is None and (split := parse_split_key(key)) is not None:
            parsed = None if deleted else parse_split(value)
            if parsed is None:
                self.splits.pop(split, None)
            else:
                self.splits[split] = parsed
            return self.mode == "dynamic"  # template mode has no weights: a split changes nothing there
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
    def _live_or_kept(self, app: str, env: str, live: set[tuple[str, str]]) -> bool:
        if (app, env) in self.retired:
            return False
        if (app, env) in live or self.mode == "dynamic":
            return True  # in dynamic mode an app whose instances all left answers 503 until it is retired
        return (self.settings.nginx_conf_dir / file_name(app, env)).exists()

    def render_files(self) -> dict[str, str]:
        """The nginx file of every known app and environment (503 when it has no instance now).

        An app with no live instance whose file an operator deleted is forgotten: deleting the file of an
        app that is gone is how its server block is retired.
        """
        values = list(self.instances.values())
        live = {(i.app, i.env) for i in values}
        self.known = {(app, env) for app, env in self.known if self._live_or_kept(app, env, live)}
        options = {"template": self.template} if self.template else {}
        return {
            file_name(app, env): render_app(app, env, values, settings=self.settings, **options)
            for app, env in sorted(self.known)
        }

    def routes(self) -> dict[str, list[str]]:
        """Upstream (``{app}_{env}``) → its live members (``ip:port``), for every known app; empty: 503."""
        live: dict[tuple[str, str], set[str]] = {}
        for instance in self.instances.values():
            live.setdefault((instance.app, instance.env), set()).add(instance.address)
        self.known = {
            (app, env) for app, env in self.known | set(live) if self._live_or_kept(app, env, set(live))
        }
        routes = {}
        for app, env in sorted(self.known):
            members = live.get((app, env), set())
            split = self.splits.get((app, env))
            routes[upstream_name(app, env)] = (
                weighted(members, split.members, split.weight) if split else sorted(members)
            )
        return routes

    async def _apply(self) -> bool:
        """Bring nginx to the instances known now; True once it serves them (False: nothing changed)."""
        if self.table is None:
            files = self.render_files()
            retired = [file_name(app, env) for app, env in self.retired]
            reloaded = await asyncio.to_thread(self.nginx.apply, files, retired)
            if reloaded:
                self.metrics.reloads.inc()
            return reloaded
        full = self.table.written is None
        if not self._adopted:
            await self._adopt()
        written = await self.table.write(self.routes())
        if written:
            self.metrics.table_writes.inc()
        old_files = [file_name(app, env) for app, env in self._previously_rendered()] if full else []
        # Template-mode files left from before: their exact server names would win over the table.
        cleared: bool = bool(old_files) and await asyncio.to_thread(self.nginx.apply, {}, old_files)
        if cleared:
            self.metrics.reloads.inc()
        return written

    async def _adopt(self) -> None:
        """Dynamic mode, once: apps that nginx's table or template-mode files already hold stay known, so
        that those whose instances left meanwhile answer 503 rather than keep their old members."""
        held = await self.table.table.members() if self.table is not None else {}
        for upstream in held:
            app, _, env = upstream.rpartition("_")
            self.known.add((app, env))
        self.known |= self._previously_rendered()
        self._adopted = True

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
                applied = await self._apply()
            except DiscoveryError as exc:
                self.metrics.failures.inc()
                log.error("%s", exc)  # retried on the next change (dynamic mode: once nginx answers again)
                applied = exc.reloaded
                if self.table is None and exc.reloaded:
                    self.metrics.reloads.inc()
            if applied and started is not None:
                self.metrics.latency.observe(time.monotonic() - started)
            if self._dirty:  # changes arrived during this render: one more, once they pause
                await self._settle()

    # The loop
    async def run(self, stop: asyncio.Event) -> None:
        """Watch and render until ``stop`` is set; re-read and re-watch after any failure."""
        backoff = 0.2
        keeper = asyncio.create_task(self._keep_table(stop)) if self.table is not None else None
        follower = asyncio.create_task(self._follow_mode(stop))
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
        await asyncio.gather(follower, return_exceptions=True)
        if keeper is not None:
            await asyncio.gather(keeper, return_exceptions=True)
        if self._pending is not None:
            await asyncio.gather(self._pending, return_exceptions=True)
        if self.table is not None:
            await self.table.table.close()

    async def _follow_mode(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        """Stop (``mode_changed``) once ``up`` rendered nginx in the other mode: the daemon's supervisor
        starts it again, in that mode."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            if not stop.is_set() and running_mode(self.settings) != self.mode:
                log.warning("nginx now routes in %s mode: discover restarts to follow it", self.mode)
                self.mode_changed = True
                stop.set()

    async def _keep_table(self, stop: asyncio.Event, interval: float = 0.25) -> None:
        """Dynamic mode: write the whole table again once nginx holds another (a restart empties it)."""
        reachable = True
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
            if stop.is_set() or self.table is None or not self.watching:
                continue
            in_sync = await self.table.in_sync()
            if in_sync is None:
                if reachable:
                    log.warning("nginx's routing table does not answer; its members are written once it does")
                reachable = False
                continue
            reachable = True
            if not in_sync and self.table.written is not None:
                log.warning("nginx holds another routing table (restarted?): writing every route again")
                self.metrics.table_restores.inc()
                self.table.written = None
                self._changed()
            elif not in_sync and (self._pending is None or self._pending.done()):
                self._changed()  # the last write failed: try again now that nginx answers

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
            if self._event(event.kv.key.decode(), deleted=str(event.kind) == "DELETE", value=event.kv.value):
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
