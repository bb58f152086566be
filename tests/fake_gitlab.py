"""A fake GitLab for tests: the v4 REST endpoints Shipline uses, served on 127.0.0.1 by uvicorn.

It answers with GitLab's paths, status codes and JSON bodies, so that python-gitlab, unchanged, talks to
it as it would to GitLab:

- ``GET /projects/:id``, ``GET /projects/:id/repository/branches[/:branch]``,
  ``GET /projects/:id/repository/commits/:sha``;
- ``POST /projects/:id/statuses/:sha``, ``GET /projects/:id/repository/commits/:sha/statuses``;
- ``GET|POST /projects/:id/repository/commits/:sha/comments``;
- ``GET|POST /projects/:id/hooks``, ``GET|PUT|DELETE /projects/:id/hooks/:hook_id``.

``:id`` is a numeric id or the URL-encoded path (``group%2Fapp``), as in GitLab; so is a branch name.

Commit statuses follow GitLab's rules (``Ci::CreateCommitStatusService``): a post updates the status of
that name and ref which is still pending or running, else it starts a new one; the state machine refuses
an event that does not apply (pending twice: ``:enqueue from :pending``, running twice:
``:run from :running``, pending after running: ``:enqueue from :running``) with a 400. A status that
reached success, failed or canceled is never updated again: the next post of that name starts a new one.

Simplifications: every request needs the token (GitLab would answer 404 for an anonymous read of a
private project, 401 where authentication is required); a commit exists once it has been the head of a
branch; lists are not paginated.

Usage::

    with FakeGitLab() as gl:
        gl.add_project("group/app", branches={"main": sha})
        ...  # python-gitlab against gl.url with gl.token
        assert gl.status_history("group/app", sha, "shipline/build") == ["pending", "running"]
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http import HTTPStatus
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

DEFAULT_TOKEN = "glpat-fake-gitlab-token"

STATES = ("pending", "running", "success", "failed", "canceled", "skipped")
ACTIVE = ("pending", "running")

# GitLab's commit status state machine (CommitStatus): event of each posted state, and the states it
# leaves from. "running" first enqueues quietly (a new status goes created -> pending), then runs.
EVENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "pending": ("enqueue", ("created",)),
    "running": ("run", ("pending",)),
    "success": ("success", ("created", "pending", "running")),
    "failed": ("drop", ("created", "pending", "running")),
    "canceled": ("cancel", ("created", "pending", "running")),
    "skipped": ("skip", ("created", "pending")),
}

HOOK_EVENTS = (
    "push_events",
    "tag_push_events",
    "merge_requests_events",
    "issues_events",
    "confidential_issues_events",
    "note_events",
    "confidential_note_events",
    "job_events",
    "pipeline_events",
    "wiki_page_events",
    "deployment_events",
    "releases_events",
    "feature_flag_events",
    "milestone_events",
    "emoji_events",
    "resource_access_token_events",
)
HOOK_FLAGS = (*HOOK_EVENTS, "enable_ssl_verification")
HOOK_TEXTS = ("name", "description", "push_events_branch_filter", "branch_filter_strategy")


class StatusPost(NamedTuple):
    """One accepted status post, as it left the status."""

    name: str
    state: str
    target_url: str | None
    description: str | None


@dataclass
class Job:
    """One commit status as GitLab keeps it: a job of an external stage, updated in place while active."""

    id: int
    sha: str
    ref: str
    name: str
    state: str = "created"
    target_url: str | None = None
    description: str | None = None
    created_at: str = ""
    started_at: str | None = None
    finished_at: str | None = None


async def _cgi_git(
    scope: Scope, receive: Receive, repository: str, rest: str, headers: dict[str, str]
) -> Response:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GIT_PROJECT_ROOT": repository,
        "GIT_HTTP_EXPORT_ALL": "1",
        "GIT_CONFIG_NOSYSTEM": "1",
        "PATH_INFO": f"/{rest}",
        "REQUEST_METHOD": scope["method"],
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "CONTENT_TYPE": headers.get("content-type", ""),
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_CONTENT_ENCODING": headers.get("content-encoding", ""),
        "GIT_PROTOCOL": headers.get("git-protocol", ""),
        "REMOTE_USER": "oauth2",
        "REMOTE_ADDR": "127.0.0.1",
    }
    process = await asyncio.create_subprocess_exec(
        "git",
        "http-backend",
        env=environment,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate(body)
    head, _, payload = out.partition(b"\r\n\r\n")
    if not payload and b"\n\n" in out:
        head, _, payload = out.partition(b"\n\n")
    status, answer_headers = 200, {}
    for line in head.decode("latin-1").splitlines():
        key, _, value = line.partition(":")
        if key.lower() == "status":
            status = int(value.split()[0])
        elif key:
            answer_headers[key] = value.strip()
    return Response(payload, status_code=status, headers=answer_headers)


@dataclass
class FakeProject:
    """A project's state; tests read it and change it through ``FakeGitLab``'s methods."""

    id: int
    path: str
    repository: str | None
    default_branch: str | None
    branches: dict[str, str]
    branch_history: dict[str, list[str]] = field(default_factory=dict)
    hooks: list[dict[str, Any]] = field(default_factory=list)
    statuses: dict[str, list[StatusPost]] = field(default_factory=dict)
    jobs: list[Job] = field(default_factory=list)
    comments: dict[str, list[str]] = field(default_factory=dict)
    conflicts: int = 0
    served: str | None = None
    """A local bare repository served over git's smart HTTP at ``{url}/{path}.git`` (token required)."""

    def knows(self, sha: str) -> bool:
        return any(sha in shas for shas in self.branch_history.values())

    def branches_containing(self, sha: str) -> list[str]:
        """Branch names whose history holds ``sha``, the default branch first (GitLab's ``ref``)."""
        names = sorted(self.branch_history, key=lambda name: name != self.default_branch)
        return [name for name in names if sha in self.branch_history[name]]


class Refusal(Exception):
    """An answer other than success: GitLab's status code and JSON body."""

    def __init__(self, code: int, body: dict[str, Any]) -> None:
        super().__init__(code, body)
        self.code, self.body = code, body


def not_found(what: str) -> Refusal:
    return Refusal(404, {"message": f"404 {what} Not Found"})


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


Handler = Callable[[dict[str, str], dict[str, Any]], tuple[int, Any]]


class _Server(uvicorn.Server):
    """uvicorn's server, checking ``should_exit`` every 5 ms, not 100 ms: tests stop it often."""

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter += 1
            await asyncio.sleep(0.005)


class FakeGitLab:
    """A GitLab server holding projects, branches, commit statuses, comments and hooks in memory.

    Args:
        token: The only token it accepts (``PRIVATE-TOKEN`` header, or ``Authorization: Bearer``).

    Attributes:
        token: See above.
        broken: When True, every request is answered 500.
        requests: Each request received, as (method, path as sent, URL-encoding kept).
    """

    def __init__(self, token: str = DEFAULT_TOKEN) -> None:
        self.token = token
        self.broken = False
        self.requests: list[tuple[str, str]] = []
        self._projects: dict[int, FakeProject] = {}
        self._ids = itertools.count(1)
        self._job_ids = itertools.count(1)  # job and hook ids are global in GitLab, not per project
        self._hook_ids = itertools.count(1)
        self._lock = threading.Lock()
        self._port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._app = Starlette(
            routes=self._routes(),
            exception_handlers={
                Refusal: self._refused,
                HTTPException: self._http_exception,
            },
        )

    # -- running ---------------------------------------------------------------------------------------

    def __enter__(self) -> FakeGitLab:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, as given to ``gitlab.Gitlab`` (the API is under ``/api/v4``)."""
        if self._port is None:
            raise RuntimeError("the fake GitLab is not running")
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> None:
        """Serve on a free port of 127.0.0.1 from a background thread; return once it accepts requests."""
        # IPPROTO_TCP, not 0: asyncio turns Nagle off only on sockets that say they are TCP, and with it
        # on every keep-alive request waits ~40 ms for a delayed ACK
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))  # the kernel picks a free port, so parallel fakes never collide
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._asgi,
            http="h11",
            interface="asgi3",
            lifespan="off",
            log_config=None,  # leave the test session's logging set-up alone
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = _Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="fake-gitlab", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake GitLab did not start")
            time.sleep(0.002)

    def stop(self) -> None:
        """Stop serving and wait for the server thread."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None

    # -- state, for tests -------------------------------------------------------------------------------

    def add_project(
        self,
        path: str,
        *,
        branches: dict[str, str] | None = None,
        repository: str | None = None,
        default_branch: str | None = None,
        serve: str | None = None,
    ) -> int:
        """Add the project ``path`` (``group/app``) and return its numeric id.

        Args:
            path: ``path_with_namespace``.
            branches: Branch name -> head commit id.
            repository: ``http_url_to_repo`` (e.g. a local bare repository); defaults to a URL on the fake.
            default_branch: Defaults to ``main`` if there is one, else the first branch.
            serve: A local bare repository to serve over git's smart HTTP as ``{url}/{path}.git``, which
                becomes ``http_url_to_repo``: clones and fetches need the token, as GitLab's do (any user
                name, the token as password).
        """
        branches = dict(branches or {})
        if default_branch is None:
            default_branch = "main" if "main" in branches else next(iter(branches), None)
        with self._lock:
            project_id = next(self._ids)
            self._projects[project_id] = FakeProject(
                id=project_id,
                path=path,
                repository=repository,
                default_branch=default_branch,
                served=serve,
                branches=branches,
                branch_history={name: [sha] for name, sha in branches.items()},
            )
        return project_id

    def project(self, project: str | int) -> FakeProject:
        """The project with this path or numeric id (KeyError if there is none)."""
        found = self._find(str(project))
        if found is None:
            raise KeyError(project)
        return found

    def advance_branch(self, project: str | int, branch: str, sha: str) -> None:
        """Move (or create) ``branch``'s head to ``sha``, as a push would, without any webhook."""
        with self._lock:
            state = self.project(project)
            state.branches[branch] = sha
            state.branch_history.setdefault(branch, []).append(sha)

    def conflicts(self, project: str | int, count: int) -> None:
        """Answer the next ``count`` status posts with 409, as GitLab does when it cannot get the lock."""
        with self._lock:
            self.project(project).conflicts = count

    def status_history(self, project: str | int, sha: str, name: str) -> list[str]:
        """The states that the accepted posts of status ``name`` on ``sha`` left, in order."""
        with self._lock:
            posts = self.project(project).statuses.get(sha, [])
            return [post.state for post in posts if post.name == name]

    def add_hook(self, project: str | int, url: str, *, token: str | None = None, **settings: Any) -> int:
        """Add a hook as a user would in GitLab's settings, with GitLab's defaults; return its id."""
        with self._lock:
            state = self.project(project)
            hook = self._new_hook(state)
            self._apply_hook_settings(hook, {"url": url, "token": token, **settings})
            state.hooks.append(hook)
            return int(hook["id"])

    def edit_hook(self, project: str | int, hook_id: int, **settings: Any) -> None:
        """Change a hook's settings as a user would in GitLab's settings."""
        with self._lock:
            hook = self._hook_of(self.project(project), {"hook_id": str(hook_id)})
            self._apply_hook_settings(hook, settings)

    def hooks(self, project: str | int) -> list[dict[str, Any]]:
        """Copies of the project's hooks, token included (GitLab's listing hides it)."""
        with self._lock:
            return [dict(hook) for hook in self.project(project).hooks]

    def comments(self, project: str | int, sha: str) -> list[str]:
        """The notes of the comments on commit ``sha``, in order."""
        with self._lock:
            return list(self.project(project).comments.get(sha, []))

    # -- HTTP -----------------------------------------------------------------------------------------------

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route on the path as sent: ``group%2Fapp`` must stay one segment, as GitLab reads it."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        raw = scope.get("raw_path") or scope["path"].encode()
        path = raw.decode("latin-1").partition("?")[0]
        scope = {**scope, "path": path}
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        with self._lock:
            self.requests.append((scope["method"], path))
            broken = self.broken
        if ".git/" in path and not path.startswith("/api/"):
            await self._git_http(scope, receive, send, path, headers)
            return
        token = headers.get("private-token") or headers.get("authorization", "").removeprefix("Bearer ")
        if broken:
            answer = JSONResponse({"message": "500 Internal Server Error"}, status_code=500)
        elif token != self.token:
            answer = JSONResponse({"message": "401 Unauthorized"}, status_code=401)
        else:
            await self._app(scope, receive, send)
            return
        await answer(scope, receive, send)

    async def _git_http(
        self, scope: Scope, receive: Receive, send: Send, path: str, headers: dict[str, str]
    ) -> None:
        """Git's smart HTTP for a served project, through ``git http-backend`` (CGI), as GitLab serves it."""
        project_path, _, rest = path.lstrip("/").partition(".git/")
        with self._lock:
            project = self._find(project_path)
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        password = ""
        if scheme.lower() == "basic":
            password = base64.b64decode(credentials).decode(errors="replace").partition(":")[2]
        if project is None or project.served is None:
            answer: Response = Response("Not Found\n", status_code=404)
        elif password != self.token:
            answer = Response(
                "HTTP Basic: Access denied\n",
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="GitLab"'},
            )
        else:
            answer = await _cgi_git(scope, receive, project.served, rest, headers)
        await answer(scope, receive, send)

    async def _refused(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refusal)
        return JSONResponse(exc.body, status_code=exc.code)

    async def _http_exception(self, request: Request, exc: Exception) -> Response:
        # GitLab's catch-all route: unknown API paths and methods
        assert isinstance(exc, HTTPException)
        phrase = HTTPStatus(exc.status_code).phrase
        return JSONResponse({"error": f"{exc.status_code} {phrase}"}, status_code=exc.status_code)

    def _routes(self) -> list[Route]:
        project = "/api/v4/projects/{project}"
        commit = project + "/repository/commits/{sha}"
        return [
            self._route("GET", project, self._get_project),
            self._route("GET", project + "/repository/branches", self._list_branches),
            self._route("GET", project + "/repository/branches/{branch}", self._get_branch),
            self._route("GET", commit, self._get_commit),
            self._route("GET", commit + "/statuses", self._list_statuses),
            self._route("POST", project + "/statuses/{sha}", self._post_status),
            self._route("GET", commit + "/comments", self._list_comments),
            self._route("POST", commit + "/comments", self._post_comment),
            self._route("GET", project + "/hooks", self._list_hooks),
            self._route("POST", project + "/hooks", self._create_hook),
            self._route("GET", project + "/hooks/{hook_id}", self._get_hook),
            self._route("PUT", project + "/hooks/{hook_id}", self._update_hook),
            self._route("DELETE", project + "/hooks/{hook_id}", self._delete_hook),
        ]

    def _route(self, method: str, path: str, handler: Handler) -> Route:
        async def endpoint(request: Request) -> Response:
            params = await _params(request)
            args = {key: unquote(value) for key, value in request.path_params.items()}
            with self._lock:
                code, body = handler(args, params)
            if code == 204:
                return Response(status_code=204)
            return JSONResponse(body, status_code=code)

        return Route(path, endpoint, methods=[method])

    def _find(self, key: str) -> FakeProject | None:
        if key.isdigit():
            return self._projects.get(int(key))
        return next((p for p in self._projects.values() if p.path.lower() == key.lower()), None)

    def _project_of(self, args: dict[str, str]) -> FakeProject:
        found = self._find(args["project"])
        if found is None:
            raise not_found("Project")
        return found

    def _commit_of(self, project: FakeProject, ref: str) -> str:
        """The commit id that ``ref`` (a commit id or a branch name) names, as GitLab resolves it."""
        if project.knows(ref):
            return ref
        if ref in project.branches:
            return project.branches[ref]
        raise not_found("Commit")

    # projects, branches, commits

    def _project_json(self, project: FakeProject) -> dict[str, Any]:
        namespace, _, name = project.path.rpartition("/")
        return {
            "id": project.id,
            "name": name,
            "path": name,
            "path_with_namespace": project.path,
            "name_with_namespace": project.path.replace("/", " / "),
            "namespace": {"full_path": namespace, "path": namespace.rpartition("/")[2]},
            "default_branch": project.default_branch,
            "visibility": "private",
            "http_url_to_repo": (f"{self.url}/{project.path}.git" if project.served else project.repository)
            or f"{self.url}/{project.path}.git",
            "ssh_url_to_repo": f"git@127.0.0.1:{project.path}.git",
            "web_url": f"{self.url}/{project.path}",
        }

    def _commit_json(self, project: FakeProject, sha: str) -> dict[str, Any]:
        return {
            "id": sha,
            "short_id": sha[:8],
            "title": f"commit {sha[:8]}",
            "message": f"commit {sha[:8]}\n",
            "author_name": "Fake Author",
            "author_email": "author@example.com",
            "committed_date": now(),
            "web_url": f"{self.url}/{project.path}/-/commit/{sha}",
        }

    def _branch_json(self, project: FakeProject, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "commit": self._commit_json(project, project.branches[name]),
            "merged": False,
            "protected": False,
            "default": name == project.default_branch,
            "developers_can_push": False,
            "developers_can_merge": False,
            "can_push": True,
            "web_url": f"{self.url}/{project.path}/-/tree/{name}",
        }

    def _get_project(self, args: dict[str, str], params: dict[str, Any]) -> tuple[int, Any]:
        return 200, self._project_json(self._project_of(args))

    def _list_branches(self, args: dict[str, str], params: dict[str, Any]) -> tuple[int, Any]:
        project = self._project_of(args)
        return 200, [self._branch_json(project, name) for name in sorted(project.branches)]

    def _get_branch(self, args: dict[str, str], params: dict[str, Any]) -> tuple[int, Any]:
        project = self._project_of(args)
        if args["branch"] not in project.branches:
            raise not_found("Branch")
        return 200, self._branch_json(project, args["branch"])

    def _get_commit(self, args: dict[str, str], params: dict[str, Any]) -> tuple[int, Any]:
        project = self._project_of(args)
        return 200, self._commit_json(project, self._commit_of(project, args["sha"]))

    # commit statuses

    def _job_json(self, job: Job) -> dict[str, Any]:
        return {
            "id": job.id,
            "sha": job.sha,
            "ref": job.ref,
            "status": job.state,
            "name": job.name,
            "target_url": job.target_url,
            "description": job.description,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "allow_failure": False,
            "coverage": None,
            "author": {"id": 1, "username": "shipline", "name": "Shipline"},
        }

    def _post_status(self, args: dict[str, str], params: dict[str, Any]) -> tuple[int, Any]:
        project = self._project_of(args)
        state = params.get("state")
        if not state:
            raise Refusal(400, {"error": "state is missing"})
        if state not in STATES:
            raise Refusal(400, {"error": "state does not have a valid value"})
        if project.conflicts > 0:
            project.conflicts -= 1
            raise Refusal(409, {"message": "Another update to this commit status is in progress"})
        sha = self._commit_of(project, args["sha"])
        refs = project.branches_containing(sha)
        ref = params.get("ref") or (refs[0] if refs else None)
        if ref is None:
            raise not_found("References for commit")
        name = params.get("name") or params.get("context") or "default"
        too_long = {
            key: ["is too long (maximum is 255 characters)"]
            for key in ("target_url", "description")
            if len(str(params.get(key) or "")) > 255
        }
        if too_long:
            raise Refusal(400, {"message": too_long})
        current = next(
            (
                job
                for job in reversed(project.jobs)
                if (job.sha, job.name, job.ref) == (sha, name, ref) and job.state in ACTIVE
            ),
            None,
        )
        job = replace(current) if current else Job(id=next(self._job_ids), sha=sha, ref=ref, name=name)
        for key in ("target_url", "description"):
            if key in params:
                setattr(job, key, params[key])
        event, sources = EVENTS[state]
        if state == "running" and job.state == "created":
            job.state = "pending"  # GitLab's quiet ``enqueue`` before ``run!``
        if job.state not in sources:
            raise Refusal(
                400,
                {
                    "message": f"Cannot transition status via :{event} from :{job.state} "
                    f'(Reason(s): Status cannot transition via "{event}")'
                },
            )
        stamp = now()
        job.state = state
        job.created_at = job.created_at or stamp
        if state == "running":
            job.started_at = stamp
        if state not in ACTIVE:
            job.finished_at = stamp
        if current is None:
            project.jobs.append(job)
        else:
            project.jobs[project.jobs.index(current)] = job
        post = StatusPost(name, job.state, job.target_url, job.description)
        project.statuses.setdefault(sha, []).append(post)
        return 201, self._job_json(job)

    def _list_statuses(self, args: dict[str, str], params: dict[str, Any]) -> tuple[int, Any]:
        project = self._project_of(args)
        sha = self._commit_of(project, args["sha"])
        jobs = [job for job in project.jobs if job.sha == sha]
        if not _boolean(params.get("all", False), "all"):
            latest = {(job.name, job.ref): job for job in jobs}  # later jobs win: GitLab's max(id)
            jobs = sorted(latest.values(), key=lambda job: job.id)
        for key, attr in (("ref", "ref"), ("name", "name")):
            if params.get(key):
                jobs = [job for job in jobs if getattr(job, attr) == params[key]]
        return 200, [self._job_json(job) for job in jobs]

    # commit comments

    def _comment_json(self, note: str) -> dict[str, Any]:
        return {
            "note": note,
            "path": None,
            "line": None,
            "line_type": None,
            "created_at": now(),
            "author": {"id": 1, "username": "shipline", "name": "Shipline"},
        }

    def _list_comments(self, args: dict[str, str], params: dict[str, Any]) -> tuple[int, Any]:
        project = self._project_of(args)
        sha = self._commit_of(project, args["sha"])
        return 200, [self._comment_json(note) for note in project.comments.get(sha, [])]

    def _post_comment(self, args: dict[str, str], params: dict[str, Any]) -> tuple[int, Any]:
        project = self._project_of(args)
        if not params.get("note"):
            raise Refusal(400, {"error": "note is missing"})
        sha = self._commit_of(project, args["sha"])
        project.comments.setdefault(sha, []).append(str(params["note"]))
        return 201, self._comment_json(str(params["note"]))

    # hooks

    def _hook_of(self, project: FakeProject, args: dict[str, str]) -> dict[str, Any]:
        hook = next((h for h in project.hooks if str(h["id"]) == args["hook_id"]), None)
        if hook is None:
            raise Refusal(404, {"message": "404 Not found"})
        return hook

    def _apply_hook_settings(self, hook: dict[str, Any], params: dict[str, Any]) -> None:
        if "url" in params:
            if not str(params["url"]).startswith(("http://", "https://")):
                raise Refusal(422, {"message": {"url": ["is blocked: Only allowed schemes are http, https"]}})
            hook["url"] = str(params["url"])
        for key in HOOK_FLAGS:
            if key in params:
                hook[key] = _boolean(params[key], key)
        for key in (*HOOK_TEXTS, "token"):
            if key in params:
                hook[key] = params[key]

    def _hook_json(self, hook: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in hook.items() if key != "token"}  # GitLab never shows it

    def _list_hooks(self, args: dict[str, str], params: dict[str, Any]) -> tuple[int, Any]:
        return 200, [self._hook_json(hook) for hook in self._project_of(args).hooks]

    def _get_hook(self, args: dict[str, str], params: dict[str, Any]) -> tuple[int, Any]:
        return 200, self._hook_json(self._hook_of(self._project_of(args), args))

    def _create_hook(self, args: dict[str, str], params: dict[str, Any]) -> tuple[int, Any]:
        project = self._project_of(args)
        if not params.get("url"):
            raise Refusal(400, {"error": "url is missing"})
        hook = self._new_hook(project)
        self._apply_hook_settings(hook, params)
        project.hooks.append(hook)
        return 201, self._hook_json(hook)

    def _new_hook(self, project: FakeProject) -> dict[str, Any]:
        return {
            "id": next(self._hook_ids),
            "url": "",
            "project_id": project.id,
            "created_at": now(),
            **dict.fromkeys(HOOK_EVENTS, False),
            "push_events": True,  # GitLab's defaults: pushes on, SSL verification on
            "enable_ssl_verification": True,
            **dict.fromkeys(HOOK_TEXTS, None),
            "token": None,
        }

    def _update_hook(self, args: dict[str, str], params: dict[str, Any]) -> tuple[int, Any]:
        hook = self._hook_of(self._project_of(args), args)
        changed = dict(hook)
        self._apply_hook_settings(changed, params)  # validated in full before anything is kept
        hook.update(changed)
        return 200, self._hook_json(hook)

    def _delete_hook(self, args: dict[str, str], params: dict[str, Any]) -> tuple[int, Any]:
        project = self._project_of(args)
        project.hooks.remove(self._hook_of(project, args))
        return 204, None


async def _params(request: Request) -> dict[str, Any]:
    """Query string and body (JSON or form), merged as Grape merges them."""
    params: dict[str, Any] = dict(request.query_params)
    body = await request.body()
    if not body:
        return params
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            data = json.loads(body)
        except ValueError:
            raise Refusal(400, {"error": "body is not valid JSON"}) from None
        if isinstance(data, dict):
            params.update(data)
    elif content_type.startswith("application/x-www-form-urlencoded"):
        params.update(parse_qsl(body.decode()))
    return params


def _boolean(value: Any, key: str) -> bool:
    """Grape's Boolean coercion: JSON booleans, or true/false/1/0 as text."""
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("true", "1", "t", "yes"):
        return True
    if text in ("false", "0", "f", "no"):
        return False
    raise Refusal(400, {"error": f"{key} is invalid"})
