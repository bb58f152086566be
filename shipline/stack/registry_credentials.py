"""The stack registry's one login: generated once by ``shipline up``, kept under ``SHIPLINE_HOME``.

The registry answers only this login (htpasswd, the one scheme Distribution has besides a token server):
a catalog read, a push or a delete without it is refused with 401. ``up`` writes, in a directory only the
stack's user may enter (0700):

- ``credentials.json`` (0600): the user name and the random password, read back through
  ``Settings.registry_login`` by every Shipline process on this host, and saved into the
  ``shipline-registry`` block (a secret field) for the workers;
- ``htpasswd`` (0600): the password's bcrypt hash, which the registry checks (it accepts no other hash).

Neither is ever printed or logged; a container a job runs gets neither (nothing under the home is mounted).
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from pathlib import Path

import bcrypt

from shipline.config import Settings

USERNAME = "shipline"
_PASSWORD_BYTES = 32
BCRYPT_ROUNDS = 4
"""bcrypt's lowest cost. The registry checks the hash on every request, and a higher cost makes each one
slow (seconds on a busy host); the password is 256 random bits, which no cost factor needs to protect."""


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only, from the first byte on, then rename it."""
    descriptor, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # 0600
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def ensure_registry_credentials(settings: Settings) -> None:
    """Generate the login once and (re)write the registry's htpasswd file from it; idempotent.

    An existing login is kept (the blocks and every client hold it); the htpasswd file is rewritten only
    when it is missing or no longer matches the login.
    """
    directory = settings.registry_credentials_file.parent
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    login = settings.registry_login()
    if login is None:
        document = {"username": USERNAME, "password": secrets.token_urlsafe(_PASSWORD_BYTES)}
        _write_private(settings.registry_credentials_file, json.dumps(document))
        login = settings.registry_login()
        assert login is not None  # just written
    username, password_secret = login
    password = password_secret.get_secret_value().encode()
    if _htpasswd_matches(settings.registry_htpasswd_file, username, password):
        return
    hashed = bcrypt.hashpw(password, bcrypt.gensalt(rounds=BCRYPT_ROUNDS)).decode()
    _write_private(settings.registry_htpasswd_file, f"{username}:{hashed}\n")


def _htpasswd_matches(path: Path, username: str, password: bytes) -> bool:
    try:
        user, _, hashed = path.read_text().strip().partition(":")
    except OSError:
        return False
    if user != username or hashed[4:7] != f"{BCRYPT_ROUNDS:02d}$":  # $2b$04$…: another cost is rewritten
        return False
    try:
        return bcrypt.checkpw(password, hashed.encode())
    except ValueError:  # not a bcrypt hash
        return False
