"""Prefect's server as the stack runs it: on SQLite, its write transactions begin IMMEDIATE.

``python -m shipline.stack.prefect_server server start …`` is ``prefect server start …`` with one change.
Prefect 3.9 begins its SQLite transactions DEFERRED unless a caller asks for a row lock: such a
transaction reads, then writes, and when another write committed between the two, SQLite in WAL mode
cannot upgrade its snapshot and fails at once with "database is locked" — the 60 s busy timeout does not
apply. The API answers 503 and the client tries again 2 s later, then 4 s, then 8 s. On the way from a
commit to PROD that cost 0 to 5 s per deploy lock (a concurrency slot with a lease) and per release run
created from its deployment, and ten deliveries started at once lost half their runs to it. Begun
IMMEDIATE, a transaction takes SQLite's write lock first, so a second writer waits its turn (the busy
timeout) instead of failing; reads outside transactions are untouched, and WAL still lets them run beside
a writer. Prefect's own SQLite set-up (``setup_sqlite``) names this cure. On PostgreSQL nothing changes.

Where Prefect's internals differ from what this expects, the server runs as Prefect ships it.

``… server services start`` runs Prefect's background services the same way, for a stack whose API runs
apart from them (``--no-services``, ``SHIPLINE_PREFECT_SERVICES=split``): they write to the same database.
Both processes then meet in Redis, whose password comes in ``PREFECT_REDIS_MESSAGING_PASSWORD`` (from a 0600
file); Docket, which takes a URL only, gets it put into ``PREFECT_SERVER_DOCKET_URL`` here, so that the
password is written in no unit and on no command line. The services wait until the API answers: it
migrates the database they use.
"""

from __future__ import annotations

import os
import runpy
import sys
import time
from collections.abc import AsyncGenerator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, urlsplit


def begin_sqlite_writes_immediately() -> bool:
    """Make Prefect's SQLite transactions begin IMMEDIATE; False when its internals are not as expected."""
    from prefect.server.database import configurations

    configuration = getattr(configurations, "AioSqliteConfiguration", None)
    mode = getattr(configurations, "SQLITE_BEGIN_MODE", None)
    if configuration is None or mode is None or not hasattr(configuration, "begin_transaction"):
        return False

    @asynccontextmanager
    async def begin_transaction(
        self: Any, session: Any, with_for_update: bool = False
    ) -> AsyncGenerator[Any, None]:
        token = mode.set("IMMEDIATE")
        try:
            async with session.begin() as transaction:
                yield transaction
        finally:
            mode.reset(token)

    configuration.begin_transaction = begin_transaction
    return True


def docket_url_with_password(environment: MutableMapping[str, str]) -> None:
    """Put the Redis password into Docket's ``redis://`` URL when the URL has none of its own."""
    url = environment.get("PREFECT_SERVER_DOCKET_URL", "")
    password = environment.get("PREFECT_REDIS_MESSAGING_PASSWORD", "")
    parts = urlsplit(url)
    if not password or parts.scheme not in {"redis", "rediss"} or "@" in parts.netloc:
        return
    environment["PREFECT_SERVER_DOCKET_URL"] = parts._replace(
        netloc=f":{quote(password, safe='')}@{parts.netloc}"
    ).geturl()


def wait_for_api(api_url: str, *, interval: float = 0.5) -> None:
    """Return once the Prefect API at ``api_url`` answers its health check (no deadline: the caller's
    supervisor and ``up``'s start timeout decide how long is too long)."""
    import httpx

    said = False
    while True:
        try:
            response = httpx.get(f"{api_url}/health", timeout=2.0, trust_env=False)
            if response.status_code == 200 and response.text.strip() == "true":
                return
        except httpx.HTTPError:
            pass
        if not said:
            print(f"shipline: waiting for the Prefect API at {api_url}", flush=True)
            said = True
        time.sleep(interval)


def server_auth_from_client(environment: MutableMapping[str, str]) -> None:
    """Give the server the clients' auth string (``PREFECT_API_AUTH_STRING``, from the stack's credentials
    file a systemd unit names) where its own (``PREFECT_SERVER_API_AUTH_STRING``) is not set."""
    client = environment.get("PREFECT_API_AUTH_STRING")
    if client and not environment.get("PREFECT_SERVER_API_AUTH_STRING"):
        environment["PREFECT_SERVER_API_AUTH_STRING"] = client


def main() -> None:
    server_auth_from_client(os.environ)
    docket_url_with_password(os.environ)
    if sys.argv[1:4] == ["server", "services", "start"] and (api := os.environ.get("PREFECT_API_URL")):
        wait_for_api(api)
    if not begin_sqlite_writes_immediately():
        print("shipline: Prefect's SQLite transactions are not as expected; running it unchanged", flush=True)
    sys.argv = ["prefect", *sys.argv[1:]]
    runpy.run_module("prefect", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
