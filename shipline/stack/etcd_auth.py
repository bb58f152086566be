"""etcd's authentication on the stack: a root user, a ``shipline`` role and user, nobody else.

``up`` writes two credentials files once (random passwords, mode 0600, in a 0700 directory): the root
user's, which only ``up`` and operators use to administer etcd, and Shipline's, which every Shipline process
connects with. Then, through etcd's HTTP gateway, it makes sure that root exists with the root role, that the
``shipline`` role may read and write every key that begins with ``/`` — instances ``/{APP}_{ENV}/…`` and
platform state ``/shipline/…``, all the keys Shipline has — that the ``shipline`` user has that role and the
file's password, and that authentication is on. Each step is idempotent, so an etcd that ran without
authentication gets it at the next ``up``, and one that has it is left as it is (Shipline's password reset
to its file's). From then on a request without a valid user is refused ("user name is empty").
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

import httpx
from pydantic import SecretStr

from shipline.config import EtcdTlsFiles, Settings
from shipline.errors import ComponentStartError
from shipline.etcd_client import EtcdCredentials, http_tls, read_credentials

ROOT = "root"
SHIPLINE = "shipline"
"""The name of both Shipline's role and its user."""
KEYS = ("/", "0")
"""The range the role may read and write: every key from ``/`` up to ``0`` (the byte after ``/``)."""
FILE_HEADER = "# etcd's {user} user, written once by shipline up. Keep it secret: mode 0600.\n"


def _write_secret_file(path: Path, text: str) -> None:
    """Write ``path`` created with mode 0600 (never readable by others, not even for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    tmp.replace(path)


def ensure_credentials(path: Path, user: str) -> EtcdCredentials:
    """The credentials in ``path``; written first, with a random password, when there is no file.

    Raises:
        ConfigError: the file exists but cannot be read or holds no credentials.
    """
    found = read_credentials(path)
    if found is not None:
        path.chmod(0o600)
        return found
    made = EtcdCredentials(user=user, password=SecretStr(secrets.token_urlsafe(24)))
    _write_secret_file(path, FILE_HEADER.format(user=user) + made.as_line() + "\n")
    return made


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class _Gateway:
    """etcd's HTTP/JSON gateway (``/v3/auth/…``), as root once authentication is on.

    ``url`` names every member (comma-separated); a request goes to the first that answers.
    """

    def __init__(self, url: str, tls: EtcdTlsFiles | None = None) -> None:
        self.url, self.tls = url, tls
        self.client = httpx.Client(timeout=5.0, trust_env=False, verify=http_tls(tls))
        self.members = [part.strip() for part in url.split(",")]
        self.token: str | None = None

    def call(
        self, path: str, body: Mapping[str, object], *, tolerate: str | None = None
    ) -> dict[str, object]:
        headers = {"Authorization": self.token} if self.token else {}
        response: httpx.Response | None = None
        for member in self.members:
            try:
                response = self.client.post(f"{member}{path}", json=body, headers=headers)
                break
            except httpx.TransportError as exc:
                failure: Exception = exc
            except httpx.HTTPError as exc:
                raise ComponentStartError(f"etcd: {path} at {member} failed: {exc}") from exc
        if response is None:
            raise ComponentStartError(f"etcd: {path} at {self.url} failed: {failure}") from failure
        answer: dict[str, object] = response.json() if response.content else {}
        error = str(answer.get("error") or "")
        if response.status_code == 200 or (tolerate is not None and tolerate in error):
            return answer
        raise ComponentStartError(f"etcd: {path} at {self.url} answered {response.status_code}: {error}")

    def authenticate(self, credentials: EtcdCredentials) -> str | None:
        """A token for ``credentials``; None when authentication is off.

        Raises:
            ComponentStartError: authentication is on and the password is refused.
        """
        answer = self.call(
            "/v3/auth/authenticate",
            {"name": credentials.user, "password": credentials.password.get_secret_value()},
            tolerate="etcdserver:",
        )
        error = str(answer.get("error") or "")
        if "authentication is not enabled" in error:
            return None
        if error:
            raise _Refused(error)
        return str(answer["token"])

    def ensure_user(self, credentials: EtcdCredentials) -> None:
        body = {"name": credentials.user, "password": credentials.password.get_secret_value()}
        self.call("/v3/auth/user/add", body, tolerate="user name already exists")
        self.call("/v3/auth/user/changepw", body)

    def close(self) -> None:
        self.client.close()


class _Refused(Exception):
    """etcd refused a user's password."""


PERMISSION = {"permType": "READWRITE", "key": _b64(KEYS[0]), "range_end": _b64(KEYS[1])}


def _accepted(gateway: _Gateway, credentials: EtcdCredentials) -> bool:
    """True when etcd (authentication on) accepts ``credentials``' password."""
    probe = _Gateway(gateway.url, gateway.tls)
    try:
        probe.authenticate(credentials)
    except _Refused:
        return False
    finally:
        probe.close()
    return True


def _in_place(gateway: _Gateway, shipline: EtcdCredentials) -> bool:
    """True when Shipline's user, its password, its role and the role's permission are all in place."""
    if not _accepted(gateway, shipline):
        return False
    user = gateway.call("/v3/auth/user/get", {"name": SHIPLINE})
    role = gateway.call("/v3/auth/role/get", {"role": SHIPLINE}, tolerate="role name not found")
    roles, permissions = user.get("roles"), role.get("perm")
    return (
        isinstance(roles, list)
        and SHIPLINE in roles
        and isinstance(permissions, list)
        and (PERMISSION in permissions)
    )


def enable_authentication(
    url: str, *, root: EtcdCredentials, shipline: EtcdCredentials, tls: EtcdTlsFiles | None = None
) -> None:
    """Make the etcd at ``url`` answer only ``root`` and ``shipline`` (idempotent).

    Args:
        url: Every member's client URL, comma-separated.
        root: etcd's root user.
        shipline: Shipline's user.
        tls: The CA, certificate and key for ``https`` URLs.

    Raises:
        ComponentStartError: etcd has authentication on and refuses root's password, or a step fails.
    """
    gateway = _Gateway(url, tls)
    try:
        try:
            gateway.token = gateway.authenticate(root)
        except _Refused:
            raise ComponentStartError(
                f"etcd at {url} has authentication on and refuses the root password of Shipline's "
                "credentials file",
                hint="restore the credentials files from a backup of SHIPLINE_HOME (or name Shipline's with "
                "SHIPLINE_ETCD_CREDENTIALS_FILE); etcd's data directory and these files belong together",
            ) from None
        enabled = gateway.token is not None
        if enabled and _in_place(gateway, shipline):
            # Nothing to change, and nothing changed: a new password or grant would cut off the clients
            # that hold a token now (the registrator's, discover's watch) until they reconnect.
            return
        if not enabled:
            gateway.ensure_user(root)
        gateway.call("/v3/auth/user/grant", {"user": ROOT, "role": ROOT})
        gateway.call("/v3/auth/role/add", {"name": SHIPLINE}, tolerate="role name already exists")
        gateway.call("/v3/auth/role/grant", {"name": SHIPLINE, "perm": PERMISSION})
        if not enabled or not _accepted(gateway, shipline):
            gateway.ensure_user(shipline)
        gateway.call("/v3/auth/user/grant", {"user": SHIPLINE, "role": SHIPLINE})
        if not enabled:
            gateway.call("/v3/auth/enable", {})
    finally:
        gateway.close()


def secure_etcd(settings: Settings) -> None:
    """Write the stack's etcd credentials once and turn etcd's authentication on with them.

    Raises:
        ComponentStartError: see ``enable_authentication``.
        ConfigError: a credentials file exists but holds none.
    """
    root = ensure_credentials(settings.etcd_root_credentials_path, ROOT)
    shipline = ensure_credentials(settings.etcd_credentials_path, SHIPLINE)
    enable_authentication(settings.etcd_url, root=root, shipline=shipline, tls=settings.etcd_tls_files)
