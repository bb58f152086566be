"""Connections to etcd as Shipline's user, with an unreachable cluster reported as Shipline's error.

etcd answers only authenticated users (``shipline up`` turns its authentication on): every process connects
as the ``shipline`` user whose password ``up`` wrote once into a file of mode 0600 under ``SHIPLINE_HOME``
(``Settings.etcd_credentials_path``), in etcdctl's own form (``ETCDCTL_USER=shipline:…``) so that an operator
can source it. The password never leaves that file but to authenticate; it is never logged.

A client is given every member's URL (``http://a:2379,http://b:2379,…``, etcdctl's ``--endpoints`` form):
one gRPC channel holds a connection to each member (``round_robin``), so when a member dies or loses its
leadership the next request goes to another. aetcd opens an insecure channel only: ``_Client`` opens a TLS
one (``grpc.aio.secure_channel``, the CA, this host's certificate and key) when the URLs are ``https``. Every
member's certificate must name the first URL's host: one channel checks one name. etcd's simple auth
tokens go through raft, so a token works on every member, and the token keeper's reads, spread over the
members, keep it alive on each — except on a member that restarted: it keeps tokens in memory only, and
does not apply again what its store had committed, so it answers "invalid auth token" to a token issued
before. The channel's interceptor (``_TokenRenewal``) then authenticates once more (the new token goes
through raft to every member, the restarted one included) and repeats the request; every later request
carries the new token.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aetcd
import grpc
from aetcd import rpc, watcher
from aetcd.client import _handle_errors
from aetcd.exceptions import (
    ClientError,
    ConnectionFailedError,
    ConnectionTimeoutError,
    InvalidArgumentError,
    PreconditionFailedError,
)
from pydantic import BaseModel, ConfigDict, SecretStr

from shipline.config import EtcdTlsFiles
from shipline.errors import ConfigError, ServiceUnavailableError

CREDENTIALS_VARIABLE = "ETCDCTL_USER"
"""The line of a credentials file: etcdctl reads ``user:password`` from this variable too."""

AUTHENTICATE = b"/etcdserverpb.Auth/Authenticate"
INVALID_TOKEN = "invalid auth token"  # noqa: S105 - etcd's answer, not a secret
TOKEN_TRIES = 3
"""Tries of a request that a member refuses for its token: the first renews it, the next wait 0.1 s, 0.2 s
for a member still applying the new token."""

TOKEN_REFRESH_SECONDS = 60.0
"""etcd's simple auth tokens expire after 5 idle minutes and aetcd never asks for a new one, so a client
that may sit idle (a watch, a lease kept alive) reads one key this often to keep its token (a request that
meets an expired token all the same authenticates again: ``_TokenRenewal``)."""

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


class Endpoint(BaseModel):
    """One member's client address."""

    model_config = ConfigDict(frozen=True)

    scheme: str
    host: str
    port: int


def parse_endpoints(url: str) -> list[Endpoint]:
    """The members of ``url`` (``http[s]://host:port``, several comma-separated).

    Raises:
        ConfigError: a URL is not ``http://`` or ``https://`` with a host, or the schemes differ.
    """
    found = []
    for part in (piece.strip() for piece in url.split(",")):
        parts = urlsplit(part)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ConfigError(
                f"etcd endpoint {part!r} is not an http:// or https:// URL with a host",
                hint="give each etcd member as http://HOST:PORT (https:// with TLS), comma-separated",
            )
        found.append(Endpoint(scheme=parts.scheme, host=parts.hostname, port=parts.port or 2379))
    if len({endpoint.scheme for endpoint in found}) > 1:
        raise ConfigError(
            f"etcd endpoints {url} mix http:// and https://",
            hint="every member speaks TLS or none does (SHIPLINE_ETCD_TLS)",
        )
    return found


def _address(host: str) -> str:
    """An IP literal for ``host`` (resolved once when it is a name), bracketed when IPv6."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = ipaddress.ip_address(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0])
    return f"[{address}]" if address.version == 6 else str(address)


def _target(endpoints: list[Endpoint]) -> str:
    """gRPC's target: ``host:port`` for one member, else the ``ipv4:``/``ipv6:`` list of every member."""
    if len(endpoints) == 1:
        return f"{endpoints[0].host}:{endpoints[0].port}"
    addresses = [f"{_address(endpoint.host)}:{endpoint.port}" for endpoint in endpoints]
    scheme = "ipv6" if addresses[0].startswith("[") else "ipv4"
    if any(address.startswith("[") != (scheme == "ipv6") for address in addresses):
        raise ConfigError(
            "etcd endpoints mix IPv4 and IPv6 addresses",
            hint="give every etcd member by addresses of one family",
        )
    return f"{scheme}:{','.join(addresses)}"


def read_tls(files: EtcdTlsFiles) -> grpc.ChannelCredentials:
    """gRPC's TLS credentials from the CA, certificate and key files.

    Raises:
        ConfigError: a file cannot be read.
    """
    try:
        ca, cert, key = (path.read_bytes() for path in (files.ca, files.cert, files.key))
    except OSError as exc:
        raise ConfigError(
            f"etcd's TLS file {exc.filename} cannot be read: {exc.strerror}",
            hint="shipline up generates them under SHIPLINE_HOME/etcd-tls; on another host copy them, or "
            "name real ones with SHIPLINE_ETCD_CA_FILE, SHIPLINE_ETCD_CERT_FILE and SHIPLINE_ETCD_KEY_FILE",
        ) from exc
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def http_tls(files: EtcdTlsFiles | None) -> ssl.SSLContext | bool:
    """What an HTTP client of etcd's gateway verifies with (``httpx``'s ``verify``): TLS with this host's
    certificate, or the default when etcd speaks plain HTTP."""
    if files is None:
        return True
    context = ssl.create_default_context(cafile=str(files.ca))
    context.load_cert_chain(str(files.cert), str(files.key))
    return context


class _TokenRenewal(grpc.aio.UnaryUnaryClientInterceptor):
    """Every request carries the client's current token; a request refused for its token ("invalid auth
    token": a member that restarted, or a token that expired) renews it and is repeated.

    Streams (watches, lease refreshes) are left as aetcd makes them, with the token of when they open: the
    renewed one, once a request renewed it (a watch stream open before breaks, and its owner watches
    again, as after any etcd interruption).
    """

    def __init__(self, client: _Client) -> None:
        self.client = client

    def _with_token(self, details: grpc.aio.ClientCallDetails, token: str) -> grpc.aio.ClientCallDetails:
        pairs = [(key, value) for key, value in (details.metadata or ()) if key != "token"]
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*pairs, ("token", token)),
            details.credentials,
            details.wait_for_ready,
        )

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        token = self.client.token
        if token is None or details.method == AUTHENTICATE:
            return await continuation(details, request)
        for attempt in range(TOKEN_TRIES):
            call = await continuation(self._with_token(details, token), request)
            if attempt == TOKEN_TRIES - 1 or await call.code() != grpc.StatusCode.UNAUTHENTICATED:
                return call
            if INVALID_TOKEN not in (await call.details() or ""):
                return call
            if attempt:
                await asyncio.sleep(0.1 * attempt)
            token = await self.client.renew_token(token)
        return call  # pragma: no cover - the loop returns


class _Client(aetcd.Client):
    """aetcd's client on one channel to every member, over TLS when ``credentials`` are given."""

    _is_connecting: bool

    def __init__(
        self,
        endpoints: list[Endpoint],
        *,
        credentials: grpc.ChannelCredentials | None,
        options: dict[str, Any],
        **kwargs: Any,
    ) -> None:
        super().__init__(host=endpoints[0].host, port=endpoints[0].port, options=options, **kwargs)
        self._target = _target(endpoints)
        self._channel_credentials = credentials
        self.token: str | None = None
        self._renewal = asyncio.Lock()

    async def renew_token(self, stale: str) -> str:
        """Authenticate again unless another request already replaced ``stale``; the current token."""
        async with self._renewal:
            if self.token == stale and self._username is not None and self._password is not None:
                request = rpc.AuthenticateRequest(name=self._username, password=self._password)
                reply = await self.auth_stub.Authenticate(request, timeout=self._timeout)
                self.token = reply.token
                self.metadata = (("token", reply.token),)
                if self._watcher is not None:  # its next stream opens with the new token
                    self._watcher._metadata = self.metadata
        assert self.token is not None
        return self.token

    @_handle_errors
    async def connect(self) -> None:
        """aetcd's ``connect``, on a channel of Shipline's (TLS, several members)."""
        if self._connected.is_set():
            return
        if self._is_connecting:
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        try:
            self._is_connecting = True
            options = list(self._options.items())
            renewal = [_TokenRenewal(self)]
            if self._channel_credentials is None:
                self.channel = grpc.aio.insecure_channel(self._target, options=options, interceptors=renewal)
            else:
                self.channel = grpc.aio.secure_channel(
                    self._target, self._channel_credentials, options=options, interceptors=renewal
                )
            if self._username is not None and self._password is not None:
                self.auth_stub = rpc.AuthStub(self.channel)
                request = rpc.AuthenticateRequest(name=self._username, password=self._password)
                reply = await self.auth_stub.Authenticate(request, timeout=self._timeout)
                self.token = reply.token
                self.metadata = (("token", reply.token),)
            self.kvstub = rpc.KVStub(self.channel)
            self.clusterstub = rpc.ClusterStub(self.channel)
            self.leasestub = rpc.LeaseStub(self.channel)
            self.maintenancestub = rpc.MaintenanceStub(self.channel)
            self._watcher = watcher.Watcher(
                rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata
            )
            self._connected.set()
        finally:
            self._is_connecting = False


def _client(
    url: str, timeout: float, credentials: EtcdCredentials | None, tls: EtcdTlsFiles | None
) -> aetcd.Client:
    endpoints = parse_endpoints(url)
    secure = endpoints[0].scheme == "https"
    options: dict[str, Any] = dict(CHANNEL_OPTIONS)
    if len(endpoints) > 1:
        # A connection to every member; a request goes to one that answers, so a member's death costs only
        # the requests in flight on it.
        options["grpc.lb_policy_name"] = "round_robin"
        if secure:
            options["grpc.ssl_target_name_override"] = endpoints[0].host
    if secure and tls is None:
        raise ConfigError(
            f"etcd at {url} speaks TLS and this process has no certificate for it",
            hint="set SHIPLINE_ETCD_TLS=true (certificates under SHIPLINE_HOME/etcd-tls), or name them with "
            "SHIPLINE_ETCD_CA_FILE, SHIPLINE_ETCD_CERT_FILE and SHIPLINE_ETCD_KEY_FILE",
        )
    return _Client(
        endpoints,
        credentials=read_tls(tls) if secure and tls is not None else None,
        username=credentials.user if credentials else None,
        password=credentials.password.get_secret_value() if credentials else None,
        timeout=timeout,
        options=options,
    )


async def _open(
    url: str, timeout: float, credentials: EtcdCredentials | None, tls: EtcdTlsFiles | None
) -> aetcd.Client:
    """A connected client; anonymous when the etcd has no authentication (it answers anyone then)."""
    client = _client(url, timeout, credentials, tls)
    try:
        await client.connect()
    except PreconditionFailedError as exc:
        await client.close()
        if "authentication is not enabled" not in str(exc):
            raise
        client = _client(url, timeout, None, tls)
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
    tls: EtcdTlsFiles | None = None,
    token_refresh_seconds: float = TOKEN_REFRESH_SECONDS,
) -> AsyncIterator[aetcd.Client]:
    """An aetcd client for the etcd at ``url`` (``http://host:port``), authenticated as Shipline's user.

    Args:
        url: etcd's client URL, or every member's, comma-separated.
        timeout: Seconds for each request.
        credentials: Whom to connect as; default: the file of this process's settings
            (``SHIPLINE_ETCD_CREDENTIALS_FILE``, else ``credentials/etcd.env`` under ``SHIPLINE_HOME``).
        tls: The CA, certificate and key for ``https`` URLs; default: this process's settings'.
        token_refresh_seconds: How often an idle client renews its auth token.

    Raises:
        ServiceUnavailableError: if etcd does not answer.
        ConfigError: if etcd refuses the credentials, or there are none and etcd wants some; if the URLs
            are invalid, or ``https`` without TLS files.
    """
    source: Path | None = None
    if credentials is None:
        credentials, source = shipline_credentials()
    if tls is None and "https://" in url:
        from shipline.config import load_settings

        tls = load_settings().etcd_tls_files
    keeper: asyncio.Task[None] | None = None
    try:
        client = await _open(url, timeout, credentials, tls)
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
        # Transient: a cluster electing a new leader answers "leader changed" for a second, and a task
        # that tries again then finds one (a single etcd that is down stays down through the retries).
        raise ServiceUnavailableError(
            f"etcd at {url} does not answer",
            hint="shipline up starts the local etcd; shipline status shows it",
            transient=True,
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
