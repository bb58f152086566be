"""Shipline's own HTTP calls to the Prefect API, with the credential and CSRF token Prefect requires.

Most of Shipline talks to Prefect through Prefect's client, which sends ``PREFECT_API_AUTH_STRING`` and
fetches CSRF tokens itself. A few hot paths use plain httpx (the webhook's run creation, the stack's
probes, tests); they pass ``PrefectAuth`` as the client's ``auth``, so they too send the Basic credential
and, on a state change, a CSRF token fetched from ``/csrf-token`` for this client (again after it expires
or the server forgets it).
"""

from __future__ import annotations

import base64
import os
import threading
import uuid
from collections.abc import Generator
from datetime import UTC, datetime, timedelta

import httpx

from shipline.config import Settings

CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_EARLY = timedelta(seconds=30)
"""A token this close to its expiry is fetched again rather than sent."""


class PrefectAuth(httpx.Auth):
    """httpx authentication for the Prefect API at ``api_url`` (sync and async clients alike).

    Args:
        api_url: Prefect's API, e.g. ``http://127.0.0.1:4200/api``.
        auth_string: ``user:password`` as the server's ``PREFECT_SERVER_API_AUTH_STRING``; None sends none.
    """

    requires_request_body = True  # a change request may be sent again with a fresh token
    requires_response_body = True  # token answers and CSRF refusals are read

    def __init__(self, api_url: str, auth_string: str | None) -> None:
        self.api_url = api_url.rstrip("/")
        self._authorization = (
            "Basic " + base64.b64encode(auth_string.encode()).decode() if auth_string is not None else None
        )
        self.client_id = str(uuid.uuid4())
        self._token: str | None = None
        self._expires = datetime.min.replace(tzinfo=UTC)
        self._csrf_disabled = False
        self._lock = threading.Lock()

    def _sign(self, request: httpx.Request) -> None:
        if self._authorization is not None:
            request.headers["Authorization"] = self._authorization

    def _add_token(self, request: httpx.Request) -> None:
        if self._token is not None:
            request.headers["Prefect-Csrf-Token"] = self._token
            request.headers["Prefect-Csrf-Client"] = self.client_id

    def _token_request(self) -> httpx.Request:
        request = httpx.Request("GET", f"{self.api_url}/csrf-token", params={"client": self.client_id})
        self._sign(request)
        return request

    def _keep_token(self, response: httpx.Response) -> None:
        if response.status_code == 422 and "CSRF protection is disabled" in response.text:
            self._csrf_disabled = True  # a server without CSRF protection: nothing to send
            return
        if response.status_code != 200:
            return  # the change request then fails with the server's own answer, which names the cause
        body = response.json()
        with self._lock:
            self._token = str(body["token"])
            self._expires = datetime.fromisoformat(str(body["expiration"]))

    def _needs_token(self) -> bool:
        return not self._csrf_disabled and (
            self._token is None or datetime.now(UTC) + _EARLY >= self._expires
        )

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Sign ``request``; before a state change, fetch a CSRF token when there is none left."""
        self._sign(request)
        if request.method not in CHANGES:
            yield request
            return
        if self._needs_token():
            self._keep_token((yield self._token_request()))
        self._add_token(request)
        response = yield request
        if response.status_code == 403 and "Invalid CSRF token" in response.text:
            self._keep_token((yield self._token_request()))  # the server restarted or expired it
            self._add_token(request)
            yield request


def environment_auth(api_url: str) -> PrefectAuth:
    """``PrefectAuth`` with this process's ``PREFECT_API_AUTH_STRING`` (workers and daemons have it)."""
    return PrefectAuth(api_url, os.environ.get("PREFECT_API_AUTH_STRING"))


def prefect_auth(settings: Settings) -> PrefectAuth:
    """``PrefectAuth`` for the stack's Prefect: its credential file, else ``PREFECT_API_AUTH_STRING``."""
    auth_string = settings.prefect_environment().get("PREFECT_API_AUTH_STRING") or os.environ.get(
        "PREFECT_API_AUTH_STRING"
    )
    return PrefectAuth(settings.prefect_api_url, auth_string)
