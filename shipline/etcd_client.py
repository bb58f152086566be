"""Connections to etcd as Shipline's user, with an unreachable cluster reported as Shipline's error.

etcd answers only authenticated users (``shipline up`` turns its authentication on): every process connects
as the ``shipline`` user whose password ``up`` wrote once into a file of mode 0600 under ``SHIPLINE_HOME``
(``Settings.etcd_credentials_path``), in etcdctl's own form (``ETCDCTL_USER=shipline:…``) so that an operator
can source it. The password never leaves that file but to authenticate; it is never logged.

aetcd speaks plain gRPC only (it opens an insecure channel), so a TLS connection to etcd members on other
hosts needs another client: today every host reaches one endpoint on loopback or a trusted link.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import aetcd
from aetcd.exceptions import (
    ClientError,
    ConnectionFailedError,
    ConnectionTimeoutError,
    InvalidArgumentError,
    PreconditionFailedError,
)
from pydantic import BaseModel, ConfigDict, SecretStr

from shipline.errors import ConfigError, ServiceUnavailableError

CREDENTIALS_VARIABLE = "ETCDCTL_USER"
"""The line of a credentials file: etcdctl reads ``user:password`` from this variable too."""

TOKEN_REFRESH_SECONDS = 60.0
"""etcd's simple auth tokens expire after 5 idle minutes and aetcd never asks for a new one, so a client
that may sit idle (a watch, a lease kept alive) reads one key this often to keep its token."""

CHANNEL_OPTIONS = {
    # gRPC shares connections process-wide by default, so a new client to an etcd that was down inherits
    # the old connection's reconnect backoff (up to 120 s) and fails at once even after etcd is back.
    # Each client gets its own connection, and retries come at most a second apart.
    "grpc.use_local_subchannel_pool": 1,
    "grpc.initial_reconnect_backoff_ms": 200,
    "grpc.min_reconnect_backoff_ms": 200,
    "grpc.max_reconnect_backoff_ms": 1000,
}


class EtcdCredentials(BaseModel):
    """An etcd user and its password."""

    model_config = ConfigDict(frozen=True)

    user: str
    password: SecretStr

    def as_line(self) -> str:
        """The file's line: ``ETCDCTL_USER=user:password``."""
        return f"{CREDENTIALS_VARIABLE}={self.user}:{self.password.get_secret_value()}"


def read_credentials(path: Path) -> EtcdCredentials | None:
    """The credentials in ``path`` (a line ``ETCDCTL_USER=user:password``); None when there is no file.

    Raises:
        ConfigError: the file cannot be read or holds no such line (its content is never shown).
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(
            f"etcd credentials {path} cannot be read: {exc.strerror}",
            hint="run Shipline as the user that ran shipline up",
        ) from exc
    for line in text.splitlines():
        name, _, value = line.strip().partition("=")
        user, _, password = value.partition(":")
        if name == CREDENTIALS_VARIABLE and user and password:
            return EtcdCredentials(user=user, password=SecretStr(password))
    raise ConfigError(
        f"etcd credentials {path} hold no line {CREDENTIALS_VARIABLE}=USER:PASSWORD",
        hint="restore the file from a backup; shipline up writes a new one only where there is none",
    )


def shipline_credentials() -> tuple[EtcdCredentials | None, Path]:
    """The credentials this process connects with (from its settings' file), and that file."""
    from shipline.config import load_settings

    path = load_settings().etcd_credentials_path
    return read_credentials(path), path


def _client(url: str, timeout: float, credentials: EtcdCredentials | None) -> aetcd.Client:
    parts = urlsplit(url)
    return aetcd.Client(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 2379,
        username=credentials.user if credentials else None,
        password=credentials.password.get_secret_value() if credentials else None,
        timeout=timeout,
        options=CHANNEL_OPTIONS,
    )


async def _open(url: str, timeout: float, credentials: EtcdCredentials | None) -> aetcd.Client:
    """A connected client; anonymous when the etcd has no authentication (it answers anyone then)."""
    client = _client(url, timeout, credentials)
    try:
        await client.connect()
    except PreconditionFailedError as exc:
        await client.close()
        if "authentication is not enabled" not in str(exc):
            raise
        client = _client(url, timeout, None)
        await client.connect()
    except BaseException:
        await client.close()
        raise
    return client


async def _keep_token(client: aetcd.Client, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(ClientError):  # etcd away: the caller's own requests report it
            await client.get(b"/shipline/token-keeper")


@asynccontextmanager
async def connect(
    url: str,
    *,
    timeout: float = 5.0,
    credentials: EtcdCredentials | None = None,
    token_refresh_seconds: float = TOKEN_REFRESH_SECONDS,
) -> AsyncIterator[aetcd.Client]:
    """An aetcd client for the etcd at ``url`` (``http://host:port``), authenticated as Shipline's user.

    Args:
        url: etcd's client URL.
        timeout: Seconds for each request.
        credentials: Whom to connect as; default: the file of this process's settings
            (``SHIPLINE_ETCD_CREDENTIALS_FILE``, else ``credentials/etcd.env`` under ``SHIPLINE_HOME``).
        token_refresh_seconds: How often an idle client renews its auth token.

    Raises:
        ServiceUnavailableError: if etcd does not answer.
        ConfigError: if etcd refuses the credentials, or there are none and etcd wants some.
    """
    source: Path | None = None
    if credentials is None:
        credentials, source = shipline_credentials()
    keeper: asyncio.Task[None] | None = None
    try:
        client = await _open(url, timeout, credentials)
        try:
            if client.metadata:  # authenticated: keep the token while the caller holds the client
                keeper = asyncio.create_task(_keep_token(client, token_refresh_seconds))
            yield client
        finally:
            if keeper is not None:
                keeper.cancel()
                await asyncio.gather(keeper, return_exceptions=True)
            await client.close()
    except (ConnectionFailedError, ConnectionTimeoutError) as exc:
        raise ServiceUnavailableError(
            f"etcd at {url} does not answer",
            hint="shipline up starts the local etcd; shipline status shows it",
        ) from exc
    except InvalidArgumentError as exc:
        refused = _refusal(str(exc), credentials, source)
        if refused is None:
            raise
        raise ConfigError(f"etcd at {url} refuses Shipline: {refused}", hint=_HINT) from exc


_HINT = (
    "shipline up writes the credentials once and sets Shipline's etcd user to them; on another host copy "
    "the file (mode 0600) from there, or name it with SHIPLINE_ETCD_CREDENTIALS_FILE"
)


def _refusal(detail: str, credentials: EtcdCredentials | None, source: Path | None) -> str | None:
    """Why etcd refused, in Shipline's words; None when the error is not about authentication."""
    where = f" in {source}" if source is not None else ""
    if "user name is empty" in detail:
        missing = f": {source} does not exist" if source is not None and credentials is None else ""
        return f"it wants a user and Shipline has no etcd credentials{missing}"
    if "authentication failed" in detail and credentials is not None:
        return f"the password of etcd user {credentials.user!r}{where} is wrong"
    return None


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
