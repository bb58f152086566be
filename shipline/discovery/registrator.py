"""``shipline registrator``: the instances of one Docker host in etcd, from the host, for any image.

1. A container labelled ``shipline.app/env/port`` starts → once ``http://{ip}:{port}{shipline.health}``
   answers, its key ``/{APP}_{ENV}/{IP}-{PORT}`` is put on this registrator's lease.
2. The lease (TTL 10 s by default) is kept alive by heartbeats every TTL/3: if the host or the
   registrator dies, its keys expire within the TTL. A refresh or the clearances' watch broken by one etcd
   member's death (or a leader election) is retried at once on another member while the lease lives: the
   same lease, the keys never leave etcd.
3. ``kill`` and ``stop`` delete the key at once — Docker reports them before the app stops answering, so
   nginx stops sending it traffic while it still drains — and ``die`` does too.
4. At start and after any etcd or Docker outage: a new lease, every healthy running instance registered
   again, and this host's keys without a running container deleted. While the host's engine is away, the
   registrator keeps trying with no lease, so its keys expire within the TTL.

Verified before traffic: a container labelled ``shipline.release`` (every instance a release starts) is
registered only once its release is cleared (``/shipline/cleared/{app}/{env}/{release}``, put by the
release flow after the release's auto-tests passed on every new instance). The registrator watches those
keys: a clearance registers the release's healthy containers at once; a container of an uncleared release
is never registered — not at its start, not by a resync after a restart. Containers without that label
(started by hand) are registered when healthy, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import aetcd
import docker
from aetcd.exceptions import ClientError, RevisionCompactedError
from docker.errors import DockerException

from shipline.discovery.instances import (
    CLEARED,
    Instance,
    deregister,
    list_instances,
    parse_cleared_key,
    register,
)
from shipline.errors import ServiceUnavailableError
from shipline.etcd_client import connect
from shipline.health import poll_health

log = logging.getLogger("shipline.registrator")
RESYNC_HEALTH_SECONDS = 3.0
"""How long a resync waits for instances' health paths, all at once."""


class LeaseLost(ServiceUnavailableError):
    """The registrator's lease expired or could not be refreshed: start over with a new one."""


LABELS = ("shipline.app", "shipline.env", "shipline.port")
EVENTS_ENDED: dict[str, Any] = {"shipline": "docker events ended"}
"""Put on the queue when the engine's event stream breaks (the engine stopped): the loop starts over."""
RELEASE_LABEL = "shipline.release"
CLEARED_HEALTH_SECONDS = 30.0
"""How long a newly cleared release's containers are given to answer their health path."""
KEEPALIVE_RETRY_SECONDS = 0.2
"""How soon a failed lease refresh is tried again (an etcd cluster elects a new leader within about 1 s)."""
WATCH_RETRY_SECONDS = 0.2


def instance_of(labels: dict[str, str], ip: str) -> Instance | None:
    """The instance a container's labels describe, or None if they describe none."""
    if not all(label in labels for label in LABELS):
        return None
    try:
        return Instance(
            app=labels["shipline.app"], env=labels["shipline.env"], ip=ip, port=int(labels["shipline.port"])
        )
    except ValueError:
        return None


class Registrator:
    """Keeps etcd in step with the Shipline containers of one Docker host.

    Args:
        docker_url: The host's Docker Engine.
        etcd_url: etcd.
        ip: The address instances are reached at (the environment's advertise IP).
        envs: Only containers of these environments (None: all).
        ttl: Lease TTL in seconds.
    """

    def __init__(
        self, *, docker_url: str, etcd_url: str, ip: str, envs: Iterable[str] | None = None, ttl: int = 10
    ) -> None:
        self.docker_url, self.etcd_url, self.ip, self.ttl = docker_url, etcd_url, ip, ttl
        self.envs = set(envs) if envs else None
        self.registered: dict[str, Instance] = {}
        self.cleared: set[tuple[str, str, int]] = set()
        self.healthy = False

    def _wanted(self, instance: Instance | None) -> bool:
        return instance is not None and (self.envs is None or instance.env in self.envs)

    def _admitted(self, instance: Instance, labels: dict[str, str]) -> bool:
        """True if the container may take traffic: no release label, or its release is cleared."""
        if RELEASE_LABEL not in labels:
            return True
        release = labels[RELEASE_LABEL]
        return release.isdigit() and (instance.app, instance.env, int(release)) in self.cleared

    async def _answers(self, instance: Instance, health: str, timeout: float = 300) -> bool:
        url = f"http://{instance.ip}:{instance.port}{health}"
        return not await poll_health([url], timeout=timeout, interval=0.1)

    def _running(self, client: docker.DockerClient) -> list[tuple[Instance, str, dict[str, str]]]:
        found = []
        for container in client.containers.list(filters={"label": "shipline.app", "status": "running"}):
            labels = dict(container.labels or {})
            instance = instance_of(labels, self.ip)
            if instance is not None and self._wanted(instance):
                found.append((instance, labels.get("shipline.health", "/healthz"), labels))
        return found

    async def _read_clearances(self, etcd: aetcd.Client) -> int:
        """Read every clearance; return the revision to watch them from."""
        result = await etcd.get_prefix(CLEARED.encode())
        self.cleared = {c for kv in result if (c := parse_cleared_key(kv.key.decode())) is not None}
        return int(result.header.revision)

    async def _register_healthy(
        self,
        etcd: aetcd.Client,
        lease: aetcd.Lease,
        candidates: list[tuple[Instance, str, dict[str, str]]],
        timeout: float,
    ) -> None:
        # Every instance at once, each answer capped: a few hanging health paths cost ``timeout`` in all,
        # not that much each, and the lease is kept alive meanwhile by its own task.
        urls = {f"http://{i.ip}:{i.port}{health}": i for i, health, _ in candidates}
        silent = await poll_health(list(urls), timeout=timeout, interval=0.1)
        for url, instance in urls.items():
            if url in silent:
                log.warning("%s does not answer %s (%s): not registered", instance.key, url, silent[url])
                continue
            await register(etcd, instance, lease)
            self.registered[instance.key] = instance
            log.info("registered %s", instance.key)

    async def _resync(self, etcd: aetcd.Client, lease: aetcd.Lease, client: docker.DockerClient) -> int:
        """Register what may be, delete this host's stale keys; return the clearances' revision."""
        revision = await self._read_clearances(etcd)
        running = self._running(client)
        admitted = [(i, health, labels) for i, health, labels in running if self._admitted(i, labels)]
        for instance, _, labels in running:
            if not self._admitted(instance, labels):
                log.info("%s waits for release %s to be cleared", instance.key, labels.get(RELEASE_LABEL))
        await self._register_healthy(etcd, lease, admitted, RESYNC_HEALTH_SECONDS)
        keep = {instance.key for instance, _, labels in admitted}
        for stale in await list_instances(etcd):
            if stale.ip == self.ip and self._wanted(stale) and stale.key not in keep:
                await deregister(etcd, stale)
                self.registered.pop(stale.key, None)
                log.info("removed %s: no running container of a cleared release", stale.key)
        return revision

    async def _watch_clearances(
        self, etcd: aetcd.Client, lease: aetcd.Lease, client: docker.DockerClient, revision: int
    ) -> None:
        """Follow clearances from ``revision`` + 1: a new one registers its release's healthy containers.

        A watch broken by its member's death is opened again from the last revision seen (the channel
        reaches another member), for as long as the lease lives; past that, or on a compacted revision,
        it raises and the run loop starts over.
        """
        broken_since: float | None = None
        while True:
            try:
                watch = await etcd.watch_prefix(CLEARED.encode(), start_revision=revision + 1)
            except RevisionCompactedError:
                raise
            except ClientError as exc:
                broken_since = broken_since or time.monotonic()
                if time.monotonic() - broken_since > self.ttl:
                    raise
                log.warning("the watch of clearances broke (%s): watching again", type(exc).__name__)
                await asyncio.sleep(WATCH_RETRY_SECONDS)
                continue
            broken_since = None
            try:
                async for event in watch:
                    revision = max(revision, int(event.kv.mod_revision))
                    await self._clearance(event, etcd, lease, client)
                return
            except RevisionCompactedError:
                raise
            except ClientError as exc:
                broken_since = time.monotonic()
                log.warning("the watch of clearances broke (%s): watching again", type(exc).__name__)
            finally:
                with contextlib.suppress(ClientError, RuntimeError):
                    await watch.cancel()

    async def _clearance(
        self, event: Any, etcd: aetcd.Client, lease: aetcd.Lease, client: docker.DockerClient
    ) -> None:
        cleared = parse_cleared_key(event.kv.key.decode())
        if cleared is None:
            return
        if str(event.kind) == "DELETE":
            self.cleared.discard(cleared)
            return
        self.cleared.add(cleared)
        app, env, release = cleared
        candidates = [
            (i, health, labels)
            for i, health, labels in await asyncio.to_thread(self._running, client)
            if (i.app, i.env, labels.get(RELEASE_LABEL)) == (app, env, str(release))
        ]
        log.info("release %s of %s in %s cleared: %d instance(s) here", release, app, env, len(candidates))
        await self._register_healthy(etcd, lease, candidates, CLEARED_HEALTH_SECONDS)

    def _follow_events(
        self,
        client: docker.DockerClient,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[dict[str, Any]],
        stop: threading.Event,
        since: int,
    ) -> None:
        filters = {"type": "container", "label": "shipline.app"}
        try:
            events = client.events(since=since, decode=True, filters=filters)
            for event in events:
                if stop.is_set():
                    events.close()
                    return
                loop.call_soon_threadsafe(queue.put_nowait, event)
        except (DockerException, OSError) as exc:
            log.warning("Docker events of %s stopped (%s)", self.docker_url, type(exc).__name__)
        if not stop.is_set():
            loop.call_soon_threadsafe(queue.put_nowait, EVENTS_ENDED)

    async def _handle(self, event: dict[str, Any], etcd: aetcd.Client, lease: aetcd.Lease) -> None:
        try:
            await self._apply(event, etcd, lease)
        except (ClientError, ServiceUnavailableError) as exc:
            # etcd went away: the loop reconnects and resyncs, which redoes this event's work.
            log.warning("etcd unavailable while handling a container event (%s): left to the resync", exc)

    async def _apply(self, event: dict[str, Any], etcd: aetcd.Client, lease: aetcd.Lease) -> None:
        action = str(event.get("Action") or event.get("status") or "")
        attributes: dict[str, str] = dict((event.get("Actor") or {}).get("Attributes", {}))
        instance = instance_of(attributes, self.ip)
        if not self._wanted(instance):
            return
        assert instance is not None
        if action in {"kill", "stop", "die"}:
            await deregister(etcd, instance)
            self.registered.pop(instance.key, None)
            log.info("deregistered %s (%s)", instance.key, action)
        elif action == "start":
            health = attributes.get("shipline.health", "/healthz")
            if not self._admitted(instance, attributes):
                log.info(
                    "%s started; waits for release %s to be cleared", instance.key, attributes[RELEASE_LABEL]
                )
            elif await self._answers(instance, health):
                await register(etcd, instance, lease)
                self.registered[instance.key] = instance
                log.info("registered %s", instance.key)
            else:
                log.warning("%s never answered %s: not registered", instance.key, health)

    async def run(self, stop: asyncio.Event) -> None:
        """Register and deregister until ``stop`` is set; start over after any etcd outage."""
        client = docker.DockerClient(base_url=self.docker_url)
        backoff = 0.5
        while not stop.is_set():
            halt = threading.Event()
            keepalive: asyncio.Task[None] | None = None
            clearances: asyncio.Task[None] | None = None
            try:
                async with connect(self.etcd_url) as etcd:
                    lease = await etcd.lease(ttl=self.ttl)
                    keepalive = asyncio.create_task(self._keep_alive(lease))
                    # Events are followed from before the resync: Docker replays those of a container that
                    # starts or stops while it runs (the handlers are idempotent), so none is lost.
                    since = int(time.time()) - 1
                    revision = await self._resync(etcd, lease, client)
                    clearances = asyncio.create_task(self._watch_clearances(etcd, lease, client, revision))
                    self.healthy, backoff = True, 0.5
                    log.info("registrator ready: %d instance(s) registered", len(self.registered))
                    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
                    loop = asyncio.get_running_loop()
                    threading.Thread(
                        target=self._follow_events, args=(client, loop, queue, halt, since), daemon=True
                    ).start()
                    await self._serve(etcd, lease, queue, stop, keepalive, clearances)
            except DockerException as exc:
                log.warning("Docker Engine %s unavailable (%s): starting over", self.docker_url, exc)
            except (ClientError, ServiceUnavailableError, OSError, LeaseLost) as exc:
                log.warning("etcd or Docker unavailable (%s): starting over", type(exc).__name__)
            finally:
                halt.set()
                self.healthy = False
                for helper in (keepalive, clearances):
                    if helper is not None:
                        helper.cancel()
            if not stop.is_set():
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _keep_alive(self, lease: aetcd.Lease) -> None:
        """Refresh the lease every third of the TTL the server grants, whatever else the daemon is doing.

        A refresh that fails (its member died, the cluster is electing a leader) is tried again every
        ``KEEPALIVE_RETRY_SECONDS`` while the lease lives: the same lease, its keys never leave etcd.

        Raises:
            LeaseLost: etcd says the lease expired.
            ClientError: no refresh succeeded before the lease's TTL ran out.
        """
        expires: float | None = None
        while True:
            sent = time.monotonic()
            try:
                reply = await lease.refresh()
            except ClientError as exc:
                if expires is None or time.monotonic() + KEEPALIVE_RETRY_SECONDS >= expires:
                    raise
                log.warning("lease %s not refreshed (%s): trying again", lease.id, type(exc).__name__)
                await asyncio.sleep(KEEPALIVE_RETRY_SECONDS)
                continue
            granted = int(getattr(reply, "TTL", 0))
            if granted <= 0:
                raise LeaseLost(f"lease {lease.id} expired")
            expires = sent + granted
            await asyncio.sleep(granted / 3)

    async def _serve(
        self,
        etcd: aetcd.Client,
        lease: aetcd.Lease,
        queue: asyncio.Queue[dict[str, Any]],
        stop: asyncio.Event,
        keepalive: asyncio.Task[None],
        clearances: asyncio.Task[None],
    ) -> None:
        pending: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            if keepalive.done():
                keepalive.result()  # raises why the lease could not be kept: the run loop starts over
                raise LeaseLost("the lease keep-alive stopped")
            if clearances.done():
                clearances.result()  # raises why the watch broke: the run loop starts over and resyncs
                raise ServiceUnavailableError("the watch of release clearances ended")
            try:
                event = await asyncio.wait_for(queue.get(), timeout=0.25)
            except TimeoutError:
                continue
            if event is EVENTS_ENDED:
                raise ServiceUnavailableError(
                    f"the Docker Engine at {self.docker_url} stopped sending events"
                )
            task = asyncio.create_task(self._handle(event, etcd, lease))
            pending.add(task)
            task.add_done_callback(pending.discard)
        for task in pending:
            task.cancel()
