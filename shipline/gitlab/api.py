"""The one place Shipline reaches GitLab: commit statuses, commit comments, branch heads, project webhooks.

Everything goes through python-gitlab against GitLab's v4 REST API. Objects are fetched lazily, so
setting a status or commenting costs one request and nothing is read that is not needed.

Raises:
    NotifyError: from every public method, for every refusal or failure of GitLab or of the
        connection to it. The message names the GitLab URL, the project, what was attempted, and
        GitLab's response code and message; ``transient`` is True for 5xx answers, a 409 still there
        after the retries, a rate limit, and connection errors.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal
from urllib.parse import urlsplit

import gitlab
import requests
from gitlab.exceptions import GitlabError
from pydantic import SecretStr

from shipline.errors import NotifyError


def token_may_go_to(source: str, gitlab_url: str) -> bool:
    """True when a clone of ``source`` may carry the GitLab token: ``source`` is on the GitLab at
    ``gitlab_url`` (same host and port) and the token travels encrypted (https), or stays on loopback."""
    there, home = urlsplit(source), urlsplit(gitlab_url)
    if there.scheme not in {"http", "https"} or there.hostname is None:
        return False
    if (there.hostname.lower(), there.port or _PORTS[there.scheme]) != (
        (home.hostname or "").lower(),
        home.port or _PORTS.get(home.scheme, 0),
    ):
        return False
    if there.scheme == "https":
        return True
    try:
        return ipaddress.ip_address(there.hostname).is_loopback
    except ValueError:
        return there.hostname == "localhost"


_PORTS = {"http": 80, "https": 443}

StatusState = Literal["pending", "running", "success", "failed", "canceled"]
WebhookChange = Literal["created", "updated", "unchanged"]

# GitLab holds a lock per commit while it updates a status and answers 409 when it could not get it
# within ~10 s; another update is still running, so waiting a little and asking again usually works.
CONFLICT_BACKOFF: tuple[float, ...] = (0.5, 1.0, 2.0)

# GitLab caps descriptions at 255 characters; 140 also fits the pipeline view's tooltip unclipped.
DESCRIPTION_LIMIT = 140

# GitLab's state machine refuses an event that does not apply to the status's current state, e.g.
# "Cannot transition status via :run from :running (Reason(s): ...)".
_INVALID_TRANSITION = re.compile(r"Cannot transition status via :(?P<event>\w+) from :(?P<current>\w+)")

# The events the project's webhook must deliver: pushes and tags start deliveries, merge requests
# start review builds.
_HOOK_EVENTS = ("push_events", "tag_push_events", "merge_requests_events")


class GitLabProject:
    """One GitLab project, reached with a token.

    Args:
        client: A python-gitlab client (base URL, token, timeout).
        project: The project's path (``group/app``; python-gitlab URL-encodes it) or its numeric id.
        sleep: Waits between retries of a status update; injectable so that tests do not wait.
    """

    def __init__(
        self, client: gitlab.Gitlab, project: str, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._client = client
        self._project_id = project
        # Lazy: no request now; every call below builds its path from the id or the encoded path.
        self._project = client.projects.get(project, lazy=True)
        self._sleep = sleep

    @classmethod
    def connect(
        cls, url: str, token: SecretStr | None, project: str, *, timeout: float = 10.0
    ) -> GitLabProject:
        """A project on the GitLab at ``url``; no request is made until the first call.

        Args:
            url: GitLab's base URL (``https://gitlab.example.com``), without ``/api/v4``.
            token: A token with the api scope; None reaches GitLab anonymously (public projects only).
            project: The project's path (``group/app``) or numeric id.
            timeout: Seconds to wait for each answer.

        Returns:
            The project, ready to use.
        """
        private_token = token.get_secret_value() if token is not None else None
        return cls(gitlab.Gitlab(url, private_token=private_token, timeout=timeout), project)

    @property
    def url(self) -> str:
        """GitLab's base URL."""
        return self._client.url

    @property
    def project(self) -> str:
        """The project's path or id, as given."""
        return self._project_id

    def set_commit_status(
        self,
        sha: str,
        *,
        name: str,
        state: StatusState,
        target_url: str | None = None,
        description: str = "",
    ) -> None:
        """Set the commit status ``name`` on ``sha`` to ``state``.

        Reporting a state the status is already in is not an error (GitLab refuses it with a 400);
        neither is reporting "pending" for a status that is already running, since GitLab never
        moves a status back and such a report can only be late. A 409 (another update of the same
        status is in progress) is retried after each delay of ``CONFLICT_BACKOFF``.

        Args:
            sha: The commit id.
            name: The status's name, e.g. ``shipline/prod``; one status per name and commit.
            state: The new state.
            target_url: Where the status links to (the flow run), if anywhere.
            description: A short text; cut to ``DESCRIPTION_LIMIT`` characters.

        Raises:
            NotifyError: GitLab refused the status (code and message in the text), was unreachable,
                or still answered 409 after the retries (transient).
        """
        data: dict[str, Any] = {"state": state, "name": name, "description": description[:DESCRIPTION_LIMIT]}
        if target_url is not None:
            data["target_url"] = target_url
        action = f"set the commit status {name}={state} on {sha[:12]}"
        commit = self._project.commits.get(sha, lazy=True)
        with self._boundary(action):
            for delay in (*CONFLICT_BACKOFF, None):
                try:
                    commit.statuses.create(data)
                    return
                except GitlabError as exc:
                    if exc.response_code == 409 and delay is not None:
                        self._sleep(delay)
                        continue
                    if _already_there(exc, state):
                        return
                    raise

    def comment_on_commit(self, sha: str, note: str) -> None:
        """Add a comment to the commit ``sha``.

        Args:
            sha: The commit id.
            note: The comment, in GitLab Markdown.

        Raises:
            NotifyError: GitLab refused the comment or was unreachable.
        """
        with self._boundary(f"comment on commit {sha[:12]}"):
            self._project.commits.get(sha, lazy=True).comments.create({"note": note})

    def branch_head(self, branch: str) -> str:
        """The id of the commit at the head of ``branch``.

        Args:
            branch: The branch's name (``main``, ``feature/x``).

        Returns:
            The full commit id.

        Raises:
            NotifyError: the branch or project does not exist (404), or GitLab failed or was unreachable.
        """
        with self._boundary(f"read the head of branch {branch}"):
            head: str = self._project.branches.get(branch).commit["id"]
        return head

    def ensure_webhook(self, url: str, *, secret: SecretStr) -> WebhookChange:
        """Make the project's webhook to ``url`` deliver pushes, tag pushes and merge requests.

        The hook whose URL equals ``url`` (the first, if there are several) is updated; without one a
        hook is created. SSL verification is on for https URLs and off for http ones.

        GitLab never shows a hook's token, so whether the stored one equals ``secret`` cannot be read.
        A stale token would make every delivery fail Shipline's check, silently, so the token is always
        sent again: an existing hook is always updated, and "unchanged" is never returned.

        Args:
            url: Where GitLab delivers the events (Shipline's webhook endpoint).
            secret: Sent by GitLab in ``X-Gitlab-Token`` with each event.

        Returns:
            "created" when there was no hook for ``url``, else "updated".

        Raises:
            NotifyError: GitLab refused (the token needs the Maintainer role) or was unreachable.
        """
        settings: dict[str, Any] = dict.fromkeys(_HOOK_EVENTS, True)
        settings["enable_ssl_verification"] = url.lower().startswith("https://")
        with self._boundary(f"set up the webhook to {url}"):
            existing = [hook for hook in self._project.hooks.list(get_all=True) if hook.url == url]
            data = {"url": url, **settings, "token": secret.get_secret_value()}
            if not existing:
                self._project.hooks.create(data)
                return "created"
            self._project.hooks.update(existing[0].id, data)
            return "updated"

    @contextmanager
    def _boundary(self, action: str) -> Iterator[None]:
        """Translate python-gitlab's and requests' errors raised inside into ``NotifyError``."""
        where = f"GitLab {self.url}, project {self._project_id}"
        try:
            yield
        except GitlabError as exc:
            code = exc.response_code
            raise NotifyError(
                f"{where}: could not {action}: {code or 'no answer code'} {exc.error_message}",
                hint=_hint(code, self._project_id),
                transient=code is not None and (code >= 500 or code in (409, 429)),
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise NotifyError(
                f"{where}: could not {action}: no answer ({type(exc).__name__}: {exc})",
                hint=f"check that GitLab is up and reachable at {self.url}",
                transient=True,
            ) from exc


def _already_there(exc: GitlabError, state: StatusState) -> bool:
    """True when GitLab refused a status because it is already in ``state`` (or past "pending")."""
    found = _INVALID_TRANSITION.search(str(exc.error_message)) if exc.response_code == 400 else None
    if found is None:
        return False
    current = found["current"]
    return current == state or (state == "pending" and current == "running")


def _hint(code: int | None, project: str) -> str:
    """What to do about GitLab's answer ``code``."""
    if code == 401:
        return "the token is missing, expired or revoked: give Shipline a token with the api scope"
    if code == 403:
        return (
            f"the token's user lacks a role on {project}: statuses and comments need Developer, "
            "webhooks need Maintainer"
        )
    if code == 404:
        return f"check the project ({project}), the commit or branch, and that the token's user can see them"
    if code == 409:
        return "another update of this status kept GitLab busy; the next report sets it again"
    if code is None or code >= 500 or code == 429:
        return "GitLab is failing or throttling; try again later"
    return "GitLab refused the request; its message says why"
