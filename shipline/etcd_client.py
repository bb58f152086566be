"""Connections to etcd, with an unreachable cluster reported as Shipline's error."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import aetcd
from aetcd.exceptions import ConnectionFailedError, ConnectionTimeoutError

from shipline.errors import ServiceUnavailableError

CHANNEL_OPTIONS = {
    # gRPC shares connections process-wide by default, so a new client to an etcd that was down inherits
    # the old connection's reconnect backoff (up to 120 s) and fails at once even after etcd is back.
    # Each client gets its own connection, and retries come at most a second apart.
    "grpc.use_local_subchannel_pool": 1,
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.min_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 1000,
}


@asynccontextmanager
async def connect(url: str, *, timeout: float = 5.0) -> AsyncIterator[aetcd.Client]:
    """An aetcd client for the etcd at ``url`` (``http://host:port``).

    Raises:
        ServiceUnavailableError: if etcd does not answer.
    """
    parts = urlsplit(url)
    client = aetcd.Client(
        host=parts.hostname or "127.0.0.1", port=parts.port or 2379, timeout=timeout, options=CHANNEL_OPTIONS
    )
    try:
        async with client:
            yield client
    except (ConnectionFailedError, ConnectionTimeoutError) as exc:
        raise ServiceUnavailableError(
            f"etcd at {url} does not answer",
            hint="shipline up starts the local etcd; shipline status shows it",
        ) from exc


async def create_if_absent(
    client: aetcd.Client, key: bytes, value: bytes, *, lease: aetcd.Lease | None = None
) -> bool:
    """Put ``key`` only if it does not exist, in one transaction; True if this call created it.

    Two callers racing for one key (a release number, a port) both try; exactly one wins.
    """
    won, _ = await client.transaction(
        compare=[client.transactions.version(key) == 0],
        success=[client.transactions.put(key, value, lease=lease)],
        failure=[],
    )
    return bool(won)
