"""nginx's routing table (dynamic mode): the members of every ``APP_ENV``, changed without a reload.

With Debian's Lua module (``libnginx-mod-http-lua``, ``lua-resty-core``) the stack's nginx routes every
``APP.ENV.localhost`` through one server block whose balancer reads the members of ``APP_ENV`` from a
shared dictionary (``templates/nginx/lua/shipline_routes.lua``). ``shipline discover`` keeps that
dictionary equal to etcd through an admin API on a unix socket, in a directory of mode 0700 under the
stack's home: a build container on the host network, which reaches every loopback port, cannot reach it.

The admin API speaks lines of text, one change each, so that a bad line harms only itself:

- ``POST /routes`` with ``generation TOKEN``, ``full`` (delete every upstream the update does not name),
  ``set UPSTREAM ip:port,ip:port`` (no members: the app answers 503) and ``delete UPSTREAM`` (404); the
  answer is ``applied N`` and a ``rejected LINE: REASON`` line for each line refused;
- ``GET /routes`` lists ``generation TOKEN`` and then ``UPSTREAM MEMBERS`` per line;
- ``GET /routes/generation`` answers the generation alone (404 when the table is new: nginx restarted);
- ``GET /routes/stats?upstream=NAME`` answers, while NAME has a canary, a line per member:
  ``ip:port ATTEMPTS 5XX BUCKET:COUNT,…`` (bucket ``i`` holds latencies up to 1.05^i ms), counted since
  nginx started.

A canary's members follow a ``|WEIGHT`` marker in the member list (``a,b,|10,c``: ``c`` takes exactly 10 of
every 100 requests); discover writes it while ``/shipline/canary/{app}/{env}`` names them (``weighted``).

Template mode (files + ``nginx -t`` + reload, ``shipline.discovery.nginx``) is what runs where the module
is missing, or when ``SHIPLINE_NGINX_MODE=template`` (operators' own templates, confd's layout).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx

from shipline.config import PROJECT_ROOT, Settings
from shipline.errors import ConfigError, DiscoveryError

NGINX_MODULES = Path("/usr/lib/nginx/modules")
LUA_MODULES = (NGINX_MODULES / "ndk_http_module.so", NGINX_MODULES / "ngx_http_lua_module.so")
"""Debian's Lua module and the development kit it needs, in the order nginx must load them."""
LUA_LIBRARY = Path("/usr/share/lua/5.1")
"""Where Debian's lua-resty-core puts ``resty/core.lua`` and ``ngx/balancer.lua``."""
ROUTES_LUA = PROJECT_ROOT / "templates" / "nginx" / "lua"
MARKER = "Routing: dynamic"
"""The line of the rendered main config that says nginx routes from the table."""

Mode = Literal["dynamic", "template"]


def lua_available() -> bool:
    """Whether this host's nginx can load the Lua module and lua-resty-core."""
    return all(path.exists() for path in LUA_MODULES) and (LUA_LIBRARY / "ngx" / "balancer.lua").exists()


def routing_mode(settings: Settings) -> Mode:
    """The mode ``up`` renders nginx in: ``SHIPLINE_NGINX_MODE``, where ``auto`` is dynamic if it can be.

    Raises:
        ConfigError: dynamic was asked for on a host without the Lua module.
    """
    if settings.nginx_mode == "template":
        return "template"
    if lua_available():
        return "dynamic"
    if settings.nginx_mode == "dynamic":
        raise ConfigError(
            "SHIPLINE_NGINX_MODE=dynamic needs nginx's Lua module, which is not installed",
            hint="apt-get install libnginx-mod-http-lua lua-resty-core (make install does), "
            "or set SHIPLINE_NGINX_MODE=template",
        )
    return "template"


def running_mode(settings: Settings) -> Mode:
    """The mode of the nginx configuration ``up`` rendered, which discover must follow."""
    try:
        text = (settings.nginx_dir / "nginx.conf").read_text()
    except FileNotFoundError:
        return routing_mode(settings)
    return "dynamic" if MARKER in text else "template"


def upstream_name(app: str, env: str) -> str:
    return f"{app}_{env}"


def weighted(live: Collection[str], canary: Collection[str], weight: int) -> list[str]:
    """The member list of a route with a canary: the other live members, ``|WEIGHT``, the canary's live
    members — or all live members plainly while either side has none (nothing to split)."""
    taking = sorted(set(live) & set(canary))
    stable = sorted(set(live) - set(canary))
    if not taking or not stable:
        return sorted(live)
    return [*stable, f"|{weight}", *taking]


LATENCY_STEP = 1.05
"""Latency bucket ``i`` of nginx's canary counts holds answers that took up to ``1.05**i`` ms."""


@dataclass(frozen=True)
class PeerStats:
    """nginx's counts of one member since it started: attempts, 5xx answers (and failed connections), and
    a latency histogram (bucket → attempts)."""

    attempts: int = 0
    errors: int = 0
    buckets: Mapping[int, int] = field(default_factory=dict)

    def since(self, earlier: PeerStats) -> PeerStats:
        """The counts added after ``earlier``; all of them if nginx restarted in between (counts fell)."""
        if self.attempts < earlier.attempts or self.errors < earlier.errors:
            return self
        buckets = {b: n - earlier.buckets.get(b, 0) for b, n in self.buckets.items()}
        return PeerStats(
            self.attempts - earlier.attempts,
            self.errors - earlier.errors,
            {b: n for b, n in buckets.items() if n},
        )


def parse_stats(text: str) -> dict[str, PeerStats]:
    """The answer of ``GET /routes/stats``: member → its counts."""
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or not parts[1].isdigit() or not parts[2].isdigit():
            continue
        buckets: dict[int, int] = {}
        for item in parts[3].split(",") if len(parts) > 3 else []:
            bucket, _, count = item.partition(":")
            if bucket.isdigit() and count.isdigit():
                buckets[int(bucket)] = int(count)
        found[parts[0]] = PeerStats(int(parts[1]), int(parts[2]), buckets)
    return found


@dataclass
class Applied:
    """What nginx's table made of an update."""

    applied: int
    rejected: dict[str, str] = field(default_factory=dict)
    """Line → nginx's reason."""


class RoutingTable:
    """The admin API of one nginx's routing table.

    Args:
        socket: The unix socket (``Settings.nginx_admin_socket``).
        transport: Replaces the socket (tests pass ``httpx.MockTransport``).
        timeout: Seconds for each call.
    """

    def __init__(
        self, socket: Path, *, transport: httpx.AsyncBaseTransport | None = None, timeout: float = 2.0
    ) -> None:
        self.socket = socket
        self._client = httpx.AsyncClient(
            transport=transport or httpx.AsyncHTTPTransport(uds=str(socket)),
            base_url="http://nginx",
            timeout=timeout,
            trust_env=False,
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, path: str, body: str = "") -> httpx.Response:
        try:
            response = await self._client.request(method, path, content=body.encode())
        except httpx.HTTPError as exc:
            raise DiscoveryError(
                f"nginx's routing table at {self.socket} does not answer: {exc or type(exc).__name__}",
                hint="shipline up starts nginx in dynamic mode; its error log is logs/nginx-error.log",
                transient=True,
            ) from exc
        if response.status_code not in (200, 404):
            raise DiscoveryError(
                f"nginx's routing table at {self.socket} answered {response.status_code}: "
                f"{response.text.strip()[:200]}",
                hint="read logs/nginx-error.log",
                transient=True,
            )
        return response

    async def generation(self) -> str | None:
        """The generation of the table's last full write; None for a new table (nginx restarted)."""
        response = await self._call("GET", "/routes/generation")
        return response.text.strip() if response.status_code == 200 else None

    async def members(self) -> dict[str, list[str]]:
        """Upstream → its members, as nginx holds them now."""
        response = await self._call("GET", "/routes")
        table: dict[str, list[str]] = {}
        for line in response.text.splitlines()[1:]:
            upstream, _, members = line.partition(" ")
            table[upstream] = [m for m in members.split(",") if m]
        return table

    async def stats(self, upstream: str) -> dict[str, PeerStats]:
        """nginx's counts of each member of ``upstream`` measured while it had a canary.

        Raises:
            DiscoveryError: nginx does not answer (transient).
        """
        response = await self._call("GET", f"/routes/stats?upstream={upstream}")
        return parse_stats(response.text)

    async def update(
        self,
        routes: Mapping[str, Collection[str]],
        delete: Collection[str] = (),
        *,
        generation: str | None = None,
        full: bool = False,
    ) -> Applied:
        """Set the members of ``routes``, delete the upstreams in ``delete``.

        Args:
            routes: Upstream → its members (``ip:port``, IPv6 in brackets); empty: the app answers 503.
            delete: Upstreams that no longer exist (their hosts answer 404).
            generation: Written with a full update, so that a restarted nginx can be told from this one.
            full: Delete every upstream that ``routes`` does not name.

        Raises:
            DiscoveryError: nginx does not answer (transient).
        """
        lines = [f"generation {generation}"] if generation else []
        lines += [f"set {upstream} {','.join(members)}".rstrip() for upstream, members in routes.items()]
        lines += [f"delete {upstream}" for upstream in delete]
        if full:
            lines.append("full")
        response = await self._call("POST", "/routes", "\n".join(lines) + "\n")
        applied, rejected = 0, {}
        for line in response.text.splitlines():
            if line.startswith("applied "):
                applied = int(line.split()[1])
            elif line.startswith("rejected "):
                what, _, why = line[len("rejected ") :].partition(": ")
                rejected[what] = why
        return Applied(applied=applied, rejected=rejected)


class TableSync:
    """Keeps one nginx's table equal to the routes discover computes: everything at the first write and
    after nginx restarted (its table is then new), and only what changed in between.

    Args:
        table: The nginx's admin API.
    """

    def __init__(self, table: RoutingTable) -> None:
        self.table = table
        self.generation = uuid.uuid4().hex
        """Written with every full write: a table that holds another one was not written by this sync."""
        self.written: dict[str, tuple[str, ...]] | None = None
        """What the table holds, as far as this sync knows; None: unknown, the next write is a full one."""

    async def write(self, routes: Mapping[str, Collection[str]]) -> bool:
        """Make the table hold exactly ``routes`` (upstream → members); whether anything was written.

        Raises:
            DiscoveryError: nginx does not answer (the next write is a full one), or refused some upstreams
                (named; they keep their last good members, the others are applied).
        """
        wanted = {upstream: tuple(members) for upstream, members in routes.items()}
        before = self.written
        try:
            if before is None:
                applied = await self.table.update(wanted, generation=self.generation, full=True)
            else:
                changed = {u: m for u, m in wanted.items() if before.get(u) != m}
                gone = [u for u in before if u not in wanted]
                if not changed and not gone:
                    return False
                applied = await self.table.update(changed, gone)
        except DiscoveryError:
            self.written = None
            raise
        refused = {line.split()[1]: why for line, why in applied.rejected.items() if len(line.split()) > 1}
        self.written = {u: m for u, m in wanted.items() if u not in refused}
        for upstream in refused:
            if before is not None and upstream in before:
                self.written[upstream] = before[upstream]
        if applied.rejected:
            raise DiscoveryError(
                f"nginx's routing table refused {', '.join(sorted(applied.rejected))}; those upstreams keep "
                "their last good members: " + "; ".join(sorted(set(applied.rejected.values()))),
                hint="check the keys of those apps in etcd",
            )
        return True

    async def in_sync(self) -> bool | None:
        """True while nginx holds this sync's table, False once it holds another (restarted), None if it
        does not answer."""
        try:
            return await self.table.generation() == self.generation
        except DiscoveryError:
            return None
