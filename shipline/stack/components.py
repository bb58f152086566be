"""The components of the embedded local stack: how each starts and how to tell that it answers.

Each probe speaks the component's own protocol (Docker's ``/_ping``, etcd's ``/health``, the registry's
``/v2/``, Prefect's ``/api/health``, a marker page of Shipline's nginx, PostgreSQL's ``SELECT 1``, Redis's
``PING`` with its password), so a stranger listening on the port is never taken for the component.
"""

from __future__ import annotations

import os
import pwd
import signal
import ssl
import subprocess
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import jinja2
import psycopg
import redis
import yaml
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from shipline.config import POOLS, PREFECT_DATABASE, PROJECT_ROOT, Settings
from shipline.discovery.nginx import test_config
from shipline.discovery.routes import LUA_LIBRARY, LUA_MODULES, ROUTES_LUA, routing_mode
from shipline.errors import ComponentStartError, ConfigError
from shipline.etcd_client import http_tls
from shipline.files import write_atomically
from shipline.prefect_auth import prefect_auth
from shipline.programs import find_program
from shipline.stack.credentials import (
    REDIS_PASSWORD_VARIABLE,
    adopt_encryption_key,
    ensure_api_credential,
    ensure_redis_password,
    redis_password,
    server_environment,
)
from shipline.stack.etcd_auth import secure_etcd
from shipline.stack.etcd_tls import ensure_etcd_tls
from shipline.stack.processes import ProcessRecord, ProcessTable
from shipline.stack.registry_credentials import ensure_registry_credentials
from shipline.stack.supervise import state_path

PROBE_TIMEOUT = httpx.Timeout(1.0)
HEARTBEAT_MS = 100
ELECTION_TIMEOUT_MS = 500
"""An etcd cluster's raft timing in ms (etcd's defaults: 100 and 1000; here elections come after 5 beats)."""

MAIN_HOST = "main"
"""The host of the stack's own engine, etcd, registry, Prefect and everything not on a host of its own."""


@dataclass
class Component(ABC):
    """A long-running process of the local stack.

    Subclasses give the command, the files it needs and a probe.
    """

    settings: Settings
    name: str = ""
    binary: str = ""
    package: str = ""
    port: int | None = None
    start_timeout: float = 30.0
    needs: tuple[str, ...] = field(default=())
    supervised: bool = False
    """Restarted within a second when it exits unasked (``shipline.stack.supervise``)."""
    stop_signal: signal.Signals = signal.SIGTERM
    """What ``down`` sends first to ask the process to shut down cleanly."""
    engine: str = ""
    """The (simulated) host the component belongs to, named by its Docker engine; ``""``: the main host."""

    @property
    def host_name(self) -> str:
        """The host ``status`` lists the component under."""
        return self.engine or MAIN_HOST

    @property
    @abstractmethod
    def url(self) -> str:
        """Where users reach the component."""

    @property
    def log(self) -> Path:
        return self.settings.log_dir / f"{self.name}.log"

    def resolve_binary(self) -> str | None:
        """Absolute path of the program, or None when it is not installed."""
        return find_program(self.binary)

    @abstractmethod
    def command(self) -> list[str]:
        """Program and arguments that run the component in the foreground."""

    def launch_command(self) -> list[str]:
        """What ``up`` starts: the command, under its supervisor when the component is supervised."""
        if not self.supervised:
            return self.command()
        state = str(state_path(self.settings.run_dir, self.name))
        return [sys.executable, "-m", "shipline.stack.supervise", self.name, state, "--", *self.command()]

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def prepare(self) -> None:  # noqa: B027 - an optional hook; most components need no files
        """Create the directories and configuration files the process reads."""

    def stopped(self) -> None:  # noqa: B027 - an optional hook; most components leave nothing behind
        """Release what the stopped process left on the machine (``down`` calls it once it is gone)."""

    def ready(self) -> None:  # noqa: B027 - an optional hook; most components need nothing more
        """Bring the answering component into the state Shipline needs (idempotent).

        ``up`` calls it once the component answers, whether it was started just now or ran already.

        Raises:
            ComponentStartError: it answers but cannot be set up.
        """

    @abstractmethod
    def probe(self, record: ProcessRecord | None = None) -> bool:
        """True when the component answers as itself (``record``: our process, if we started it)."""

    def fix_hint(self) -> str:
        return f"read {self.log}"


def _http_ok(
    url: str,
    *,
    transport: httpx.HTTPTransport | None = None,
    auth: tuple[str, str] | None = None,
    verify: ssl.SSLContext | bool = True,
) -> httpx.Response | None:
    try:
        with httpx.Client(
            timeout=PROBE_TIMEOUT, transport=transport, trust_env=False, auth=auth, verify=verify
        ) as client:
            response = client.get(url)
    except httpx.HTTPError:
        return None
    return response if response.status_code == 200 else None


@dataclass
class DockerEngine(Component):
    """A Docker Engine: the stack's own (``engine=""``), or the engine of one host of the scale profile.

    A host's engine has a socket, data root, exec root (its containerd's state) and pid file of its own,
    so two engines share nothing but the kernel; like the stack's, it makes no bridge and no iptables
    rules (instances use the host's network). It pulls from the stack's registry on loopback, which
    dockerd trusts over plain HTTP (127.0.0.0/8 is an insecure registry by default).
    """

    name: str = "docker"
    binary: str = "dockerd"
    package: str = "docker.io"
    start_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.engine:
            self.name = f"docker-{self.engine}"

    @property
    def socket(self) -> Path:
        return self.settings.engine_socket(self.engine)

    @property
    def url(self) -> str:
        return self.settings.engine_url(self.engine)

    def storage_driver(self) -> str:
        if self.settings.docker_storage_driver != "auto":
            return self.settings.docker_storage_driver
        return "overlay2" if overlay_supported(self.settings.home) else "vfs"

    @property
    def exec_root(self) -> Path | None:
        """A host engine's exec root (its containerd's state, network namespaces); None for the stack's."""
        return self.settings.run_dir / f"docker-{self.engine}" if self.engine else None

    def command(self) -> list[str]:
        s, suffix = self.settings, f"-{self.engine}" if self.engine else ""
        own_exec_root = [f"--exec-root={self.exec_root}"] if self.exec_root else []
        return [
            self.resolve_binary() or self.binary,
            "--iptables=false",
            "--ip-masq=false",
            "--bridge=none",
            f"--storage-driver={self.storage_driver()}",
            f"--data-root={s.home / f'docker{suffix}'}",
            *own_exec_root,
            f"--pidfile={s.run_dir / f'dockerd{suffix}.pid'}",
            f"--host={self.url}",
        ]

    def prepare(self) -> None:
        if self.engine:
            self.socket.unlink(missing_ok=True)  # left by an engine that was killed
            self.stopped()

    def stopped(self) -> None:
        # dockerd leaves its default network namespace mounted under its exec root when it exits; a
        # host engine's is the stack's to release, or its home could never be removed.
        if self.exec_root is not None:
            unmount_below(self.exec_root)

    def probe(self, record: ProcessRecord | None = None) -> bool:
        if not self.socket.exists():
            return False
        transport = httpx.HTTPTransport(uds=str(self.socket))
        response = _http_ok("http://docker/_ping", transport=transport)
        return response is not None and response.text == "OK"

    def fix_hint(self) -> str:
        return f"read {self.log}; dockerd needs root (run as root, or start your own engine at {self.url})"


def unmount_below(directory: Path) -> list[str]:
    """Detach every mount at or below ``directory`` (deepest first); return the mount points detached."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return []
    top = str(directory.resolve())
    # /proc/mounts escapes spaces and tabs in paths as octal (\040); Shipline's paths have none.
    points = [line.split()[1] for line in mounts if len(line.split()) > 1]
    below = sorted((p for p in points if p == top or p.startswith(top + "/")), key=len, reverse=True)
    program = find_program("umount") or "umount"
    for point in below:
        subprocess.run([program, "--lazy", point], check=False, capture_output=True)
    return below


def overlay_supported(path: Path) -> bool:
    """True when overlay2 can work under ``path``: the kernel has overlayfs and ``path`` is not on one."""
    try:
        filesystems = Path("/proc/filesystems").read_text()
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return False
    if "overlay" not in filesystems:
        return False
    target = str(path.resolve())
    best, fstype = "", ""
    for line in mounts:
        parts = line.split()
        mount_point = parts[1]
        if (target == mount_point or target.startswith(mount_point.rstrip("/") + "/")) and len(
            mount_point
        ) > len(best):
            best, fstype = mount_point, parts[2]
    return fstype != "overlay"


@dataclass
class Etcd(Component):
    """One etcd member: the only one by default, or member ``member`` (from 0) of a loopback cluster.

    A cluster's members are ``etcd-1`` … ``etcd-N``, member i on client port ``etcd_port + 2i`` and peer
    port ``etcd_peer_port + 2i``, each with its data under ``etcd-cluster/`` (a cluster of another size
    or of the other scheme keeps its own, since members remember their peers' URLs). With TLS every member
    serves clients and peers over it and wants a client certificate of the stack's CA.
    """

    name: str = "etcd"
    binary: str = "etcd"
    package: str = "etcd-server"
    start_timeout: float = 30.0
    member: int = 0

    def __post_init__(self) -> None:
        self.port = self.settings.etcd_port + 2 * self.member
        if self.clustered:
            self.name = f"etcd-{self.member + 1}"

    @property
    def clustered(self) -> bool:
        return self.settings.etcd_members > 1

    @property
    def member_name(self) -> str:
        """The member's name in the cluster (``--name``)."""
        return f"shipline-{self.member + 1}" if self.clustered else "shipline"

    @property
    def url(self) -> str:
        """This member's client URL."""
        return self.settings.etcd_client_urls[self.member]

    def peer_url(self, member: int) -> str:
        s = self.settings
        return f"{s.etcd_scheme}://{s.host}:{s.etcd_peer_port + 2 * member}"

    @property
    def data_dir(self) -> Path:
        s = self.settings
        if not self.clustered:
            return s.home / "etcd"
        return s.home / "etcd-cluster" / f"{s.etcd_members}-{s.etcd_scheme}" / self.member_name

    def prepare(self) -> None:
        ensure_etcd_tls(self.settings)

    def command(self) -> list[str]:
        s = self.settings
        peer = self.peer_url(self.member)
        if self.clustered:
            cluster = ",".join(
                f"shipline-{index + 1}={self.peer_url(index)}" for index in range(s.etcd_members)
            )
        else:
            cluster = f"shipline={peer}"
        command = [
            self.resolve_binary() or self.binary,
            f"--name={self.member_name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster={cluster}",
            # Passwords are random (24 bytes, written by up), so bcrypt's stretching adds no strength to
            # them, while its default cost (10) spends 60 ms of CPU on every client's authentication:
            # each task of a release opens a client. 4 is bcrypt's lowest cost (about 1 ms).
            "--bcrypt-cost=4",
            # Keep an hour of history for watchers that reconnect; older revisions are compacted.
            "--auto-compaction-mode=periodic",
            "--auto-compaction-retention=1h",
        ]
        if self.clustered:
            command += [
                "--initial-cluster-token=shipline",
                # Members on loopback or one LAN answer within milliseconds: a follower calls an election
                # after 0.5-1 s without the leader's heartbeat (etcd's defaults: 1-2 s), so that clients
                # move on within 2 s of the leader's death.
                f"--heartbeat-interval={HEARTBEAT_MS}",
                f"--election-timeout={ELECTION_TIMEOUT_MS}",
            ]
        if (tls := s.etcd_member_tls_files) is not None:
            command += [
                f"--cert-file={tls.cert}",
                f"--key-file={tls.key}",
                f"--trusted-ca-file={tls.ca}",
                "--client-cert-auth",
                f"--peer-cert-file={tls.cert}",
                f"--peer-key-file={tls.key}",
                f"--peer-trusted-ca-file={tls.ca}",
                "--peer-client-cert-auth",
            ]
        return command

    def ready(self) -> None:
        """Authentication on: only root and Shipline's user (credentials written once) reach the keys.

        A cluster's first member does it for all of them: users and roles are the cluster's.

        Raises:
            ComponentStartError: etcd refuses the root password of the credentials file, or a step fails.
        """
        if self.member == 0:
            secure_etcd(self.settings)

    def probe(self, record: ProcessRecord | None = None) -> bool:
        # A member is healthy once the cluster has a leader: with a quorum of its members up.
        try:
            verify = http_tls(self.settings.etcd_tls_files)
        except OSError:  # no certificates yet: nothing of ours can answer
            return False
        response = _http_ok(f"{self.url}/health", verify=verify)
        if response is None:
            return False
        try:
            return response.json().get("health") == "true"
        except ValueError:
            return False


def etcd_members(settings: Settings) -> list[Etcd]:
    """The stack's etcd members: one by default, ``SHIPLINE_ETCD_MEMBERS`` for a cluster."""
    return [Etcd(settings, member=index) for index in range(settings.etcd_members)]


@dataclass
class Registry(Component):
    name: str = "registry"
    binary: str = "docker-registry"
    package: str = "docker-registry"
    start_timeout: float = 20.0
    read_only: bool = False
    """Maintenance mode: pulls are served, pushes and deletes refused (while its blobs are collected)."""

    def __post_init__(self) -> None:
        self.port = self.settings.registry_port

    @property
    def url(self) -> str:
        return f"http://{self.settings.registry_address}"

    @property
    def config_path(self) -> Path:
        return self.settings.home / "registry" / "config.yml"

    @property
    def storage_dir(self) -> Path:
        return self.settings.home / "registry" / "data"

    def prepare(self) -> None:
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        ensure_registry_credentials(self.settings)
        storage: dict[str, object] = {
            "filesystem": {"rootdirectory": str(self.storage_dir)},
            # Housekeeping deletes old app manifests; like every write, a delete needs the login.
            "delete": {"enabled": True},
        }
        if self.read_only:
            storage["maintenance"] = {"readonly": {"enabled": True}}
        config = {
            "version": 0.1,
            "log": {"level": "info", "fields": {"service": "registry"}},
            "storage": storage,
            "auth": {"htpasswd": {"realm": "shipline", "path": str(self.settings.registry_htpasswd_file)}},
            "http": {
                "addr": self.settings.registry_address,
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
        }
        write_atomically(self.config_path, yaml.safe_dump(config, sort_keys=False))

    def command(self) -> list[str]:
        return [self.resolve_binary() or self.binary, "serve", str(self.config_path)]

    def garbage_collect_command(self, *, dry_run: bool = False) -> list[str]:
        """The registry's offline blob collection on its configuration (it must be read-only or stopped)."""
        return [
            self.resolve_binary() or self.binary,
            "garbage-collect",
            *(["--dry-run"] if dry_run else []),
            str(self.config_path),
        ]

    def _login(self) -> tuple[str, str] | None:
        login = self.settings.registry_login()
        return (login[0], login[1].get_secret_value()) if login else None

    def probe(self, record: ProcessRecord | None = None) -> bool:
        response = _http_ok(f"{self.url}/v2/", auth=self._login())
        return response is not None and "docker-distribution-api-version" in response.headers

    def ready(self) -> None:
        """Refuse a registry that answers without the login: one started before it had authentication.

        Raises:
            ComponentStartError: naming the restart that gives it its authentication.
        """
        try:
            with httpx.Client(timeout=PROBE_TIMEOUT, trust_env=False) as client:
                anonymous = client.get(f"{self.url}/v2/_catalog").status_code
        except httpx.HTTPError as exc:
            raise ComponentStartError(f"registry: {self.url} stopped answering: {exc}") from exc
        if anonymous != 401:
            raise ComponentStartError(
                f"registry: {self.url} answers {anonymous} without credentials: it runs without "
                "authentication (started by an older Shipline, or not by Shipline)",
                hint="restart it with its login: `shipline down`, then `shipline up`",
            )


@dataclass
class Nginx(Component):
    name: str = "nginx"
    binary: str = "nginx"
    package: str = "nginx-light"
    start_timeout: float = 15.0

    def __post_init__(self) -> None:
        self.port = self.settings.nginx_port
        self.engine = self.settings.edge_engine

    @property
    def url(self) -> str:
        return self.settings.nginx_url

    @property
    def config_path(self) -> Path:
        return self.settings.nginx_dir / "nginx.conf"

    def render_config(self) -> str:
        s = self.settings
        worker_user = ""
        if os.geteuid() == 0:
            worker_user = "nobody nogroup" if _group_exists("nogroup") else "nobody"
        environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader(PROJECT_ROOT / "templates" / "nginx"),
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # noqa: S701 - renders nginx syntax, not HTML; inputs are validated Settings
            keep_trailing_newline=True,
        )
        routing = routing_mode(s)
        dynamic = routing == "dynamic"
        return environment.get_template("nginx.conf.j2").render(
            host=s.edge_host,
            port=s.nginx_port,
            nginx_dir=s.nginx_dir,
            conf_dir=s.nginx_conf_dir,
            log_dir=s.log_dir,
            worker_user=worker_user,
            routing=routing,
            lua_modules=[str(path) for path in LUA_MODULES] if dynamic else [],
            lua_path=f"{ROUTES_LUA}/?.lua;{LUA_LIBRARY}/?.lua;;",
            admin_socket=s.nginx_admin_socket,
        )

    def ready(self) -> None:
        """A running nginx of an older configuration (another routing mode, a new template) gets this one.

        Raises:
            ComponentStartError: nginx rejects the new configuration (the running one stays).
        """
        text = self.render_config()
        if self.config_path.exists() and self.config_path.read_text() == text:
            return
        self.prepare_directories()
        staged = self.config_path.with_name(".nginx.conf.new")
        write_atomically(staged, text)
        problem = test_config(self.settings, staged)
        if problem is not None:
            staged.unlink(missing_ok=True)
            raise ComponentStartError(
                f"nginx: the new configuration is rejected, the running one stays: {problem}",
                hint=self.fix_hint(),
            )
        staged.replace(self.config_path)
        try:
            os.kill(int((self.settings.nginx_dir / "nginx.pid").read_text()), signal.SIGHUP)
        except (OSError, ValueError) as exc:
            raise ComponentStartError(f"nginx: cannot reload it: {exc}", hint=self.fix_hint()) from exc

    def prepare_directories(self) -> None:
        self.settings.nginx_conf_dir.mkdir(parents=True, exist_ok=True)
        admin = self.settings.nginx_admin_socket.parent
        admin.mkdir(parents=True, exist_ok=True)
        admin.chmod(0o700)  # only the stack's user (and nginx's master) reaches the routing table

    def prepare(self) -> None:
        self.prepare_directories()
        # A socket left by an nginx that was killed (SIGKILL) would stop the next one from binding it.
        self.settings.nginx_admin_socket.unlink(missing_ok=True)
        self.settings.log_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.settings.nginx_dir / "tmp"
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (tmp / sub).mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                # Workers run as nobody and buffer large bodies here.
                nobody = pwd.getpwnam("nobody")
                os.chown(tmp / sub, nobody.pw_uid, nobody.pw_gid)
        write_atomically(self.config_path, self.render_config())

    def command(self) -> list[str]:
        return [
            self.resolve_binary() or self.binary,
            "-c",
            str(self.config_path),
            "-p",
            f"{self.settings.nginx_dir}/",
            "-e",
            str(self.settings.log_dir / "nginx-error.log"),
        ]

    def probe(self, record: ProcessRecord | None = None) -> bool:
        response = _http_ok(f"{self.url}/__shipline/health")
        return response is not None and response.text.startswith("shipline nginx ok")

    def fix_hint(self) -> str:
        return f"read {self.log} and {self.settings.log_dir / 'nginx-error.log'}"


def _group_exists(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


POSTGRES_LIBRARY = Path("/usr/lib/postgresql")
"""Where Debian installs each PostgreSQL major version's server programs (``<version>/bin``)."""

POSTGRES_USER = "postgres"
"""The unprivileged OS user that runs the server (PostgreSQL refuses to run as root)."""


@dataclass
class Postgres(Component):
    """PostgreSQL for the shared log store (``SHIPLINE_LOG_STORE=postgresql``), Debian's ``postgresql``.

    The cluster lives in ``postgres_dir`` (created by ``initdb`` on the first start) and listens on the
    stack's loopback address only, its unix socket under the run directory. Once it answers, ``ready``
    creates the log store's role and database and the ``pg_trgm`` extension its search index needs.
    """

    name: str = "postgres"
    binary: str = "postgres"
    package: str = "postgresql"
    start_timeout: float = 60.0
    # SIGTERM would wait for every client to disconnect; SIGINT is PostgreSQL's "fast" clean shutdown.
    stop_signal: signal.Signals = signal.SIGINT

    def __post_init__(self) -> None:
        self.port = self.settings.postgres_port

    @property
    def url(self) -> str:
        return f"postgresql://{self.settings.host}:{self.settings.postgres_port}"

    @property
    def socket_dir(self) -> Path:
        return self.settings.run_dir / "postgres"

    def resolve_binary(self) -> str | None:
        # Debian keeps the server programs off PATH, one directory per major version: take the newest.
        versions = sorted(
            (p for p in POSTGRES_LIBRARY.glob("*/bin/postgres") if p.parent.parent.name.isdigit()),
            key=lambda p: int(p.parent.parent.name),
        )
        return str(versions[-1]) if versions else find_program(self.binary)

    def program(self, name: str) -> str:
        """A program installed beside the server (``initdb``)."""
        server = self.resolve_binary()
        return str(Path(server).with_name(name)) if server else name

    def _as_server_user(self) -> list[str]:
        """The prefix that drops root to the ``postgres`` user (empty when not root).

        ``setpriv`` executes the server in its own place, so the pid ``up`` records is the server's and
        ``down`` signals it directly.
        """
        if os.geteuid() != 0:
            return []
        return [
            find_program("setpriv") or "setpriv",
            f"--reuid={POSTGRES_USER}",
            f"--regid={POSTGRES_USER}",
            "--init-groups",
            "--",
        ]

    def prepare(self) -> None:
        data, sockets = self.settings.postgres_dir, self.socket_dir
        for directory in (data, sockets):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o700)
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam(POSTGRES_USER)
            except KeyError:
                raise ComponentStartError(
                    f"postgres: there is no {POSTGRES_USER!r} user to run the server as",
                    hint=f"install {self.package} (it creates the user): make install",
                ) from None
            for directory in (data, sockets):
                os.chown(directory, user.pw_uid, user.pw_gid)
            self._let_server_user_reach(data)
        if not (data / "PG_VERSION").exists():
            self._run_as_server_user(
                [
                    self.program("initdb"),
                    f"--pgdata={data}",
                    f"--username={POSTGRES_USER}",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    "--auth-local=peer",
                    "--auth-host=trust",
                ],
                doing="initdb",
            )
        # Loopback trust: the embedded server answers only on the stack's loopback address, and any local
        # user may connect as any role, as to the other embedded components. A shared or production
        # store is a server of its own with passwords or certificates (SHIPLINE_LOG_STORE_URL).
        hba = data / "pg_hba.conf"
        write_atomically(
            hba,
            "# Written by shipline up: the embedded server trusts its loopback address only.\n"
            "local all all peer\n"
            f"host all all {self.settings.host}/32 trust\n",
            mode=0o600,
        )
        if os.geteuid() == 0:
            user = pwd.getpwnam(POSTGRES_USER)
            os.chown(hba, user.pw_uid, user.pw_gid)

    def _run_as_server_user(self, command: list[str], *, doing: str) -> None:
        self.settings.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"\n--- shipline: {doing}: {' '.join(command)}\n".encode())
            out.flush()
            done = subprocess.run(
                [*self._as_server_user(), *command], stdout=out, stderr=subprocess.STDOUT, check=False
            )
        if done.returncode != 0:
            raise ComponentStartError(
                f"postgres: {doing} failed (exit {done.returncode}); read {self.log}", hint=self.fix_hint()
            )

    def _let_server_user_reach(self, data: Path) -> None:
        """Let the ``postgres`` user search each directory above ``data`` that it cannot (e.g. root's home).

        An ACL entry grants that one user the right to pass through (not to list or read), rather than
        opening the directories to everyone.
        """
        probe = [*self._as_server_user(), "test", "-x"]
        for directory in reversed(data.resolve().parents):
            if subprocess.run([*probe, str(directory)], check=False).returncode == 0:
                continue
            setfacl = find_program("setfacl")
            if setfacl is None:
                raise ComponentStartError(
                    f"postgres: the {POSTGRES_USER} user cannot reach {data} (through {directory})",
                    hint="install acl (make install), or set SHIPLINE_HOME to a directory it can reach",
                )
            subprocess.run([setfacl, "-m", f"u:{POSTGRES_USER}:x", str(directory)], check=True)

    def command(self) -> list[str]:
        s = self.settings
        return [
            *self._as_server_user(),
            self.resolve_binary() or self.binary,
            "-D",
            str(s.postgres_dir),
            "-h",
            s.host,
            "-p",
            str(s.postgres_port),
            "-k",
            str(self.socket_dir),
        ]

    def _connect(self, dbname: str, *, timeout: int) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=self.settings.host,
            port=self.settings.postgres_port,
            user=POSTGRES_USER,
            dbname=dbname,
            connect_timeout=timeout,
            autocommit=True,
        )

    def probe(self, record: ProcessRecord | None = None) -> bool:
        try:
            with self._connect("postgres", timeout=1) as connection:
                row = connection.execute("SELECT 1").fetchone()
        except psycopg.Error:
            return False
        return row == (1,)

    def ready(self) -> None:
        info = conninfo_to_dict(self.settings.postgres_url)
        role, database = str(info.get("user") or "shipline"), str(info.get("dbname") or "shipline_logs")
        # Prefect's own database, when it runs on this server rather than on SQLite or an external one.
        prefect = self.settings.prefect_database == "postgresql" and not self.settings.prefect_database_url
        try:
            with self._connect("postgres", timeout=5) as connection:
                if not connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                    connection.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
                for name in (database, PREFECT_DATABASE) if prefect else (database,):
                    if not connection.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
                    ).fetchone():
                        connection.execute(
                            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                                sql.Identifier(name), sql.Identifier(role)
                            )
                        )
            with self._connect(database, timeout=5) as connection:
                connection.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        except psycopg.Error as exc:
            raise ComponentStartError(
                f"postgres: answers at {self.url} but the log store's role {role!r}, database "
                f"{database!r} or extension pg_trgm cannot be created: {exc}",
                hint=f"read {self.log}; pg_trgm comes with Debian's {self.package} (make install)",
            ) from exc


@dataclass
class Redis(Component):
    """Redis, Debian's ``redis-server``: where Prefect's API and its background services meet when they run
    as two processes (``SHIPLINE_PREFECT_SERVICES=split``).

    It listens on the stack's loopback address only and answers only its password (generated once into
    ``credentials/redis.env``). The password is in its configuration file (0600, in a 0700 directory),
    never on its command line; its data (an append-only file, so that events in flight outlive a
    restart) lives beside it under ``redis/``.
    """

    name: str = "redis"
    binary: str = "redis-server"
    package: str = "redis-server"
    start_timeout: float = 20.0

    def __post_init__(self) -> None:
        self.port = self.settings.redis_port

    @property
    def url(self) -> str:
        return self.settings.redis_url

    @property
    def config_path(self) -> Path:
        return self.settings.redis_dir / "redis.conf"

    @property
    def data_dir(self) -> Path:
        return self.settings.redis_dir / "data"

    def render_config(self, password: str) -> str:
        s = self.settings
        return (
            "# Written by shipline up: loopback only, the password required of every client.\n"
            f"bind {s.host}\n"
            f"port {s.redis_port}\n"
            # With a password, protected mode changes nothing; said here so no default decides it.
            "protected-mode yes\n"
            "daemonize no\n"
            'logfile ""\n'
            f"dir {self.data_dir}\n"
            "appendonly yes\n"
            "appendfsync everysec\n"
            f"requirepass {password}\n"
        )

    def prepare(self) -> None:
        ensure_redis_password(self.settings)
        for directory in (self.settings.redis_dir, self.data_dir):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o700)
        write_atomically(self.config_path, self.render_config(redis_password(self.settings)), mode=0o600)

    def command(self) -> list[str]:
        return [self.resolve_binary() or self.binary, str(self.config_path)]

    def client(self, password: str | None) -> redis.Redis:
        """A client of the stack's Redis (``password=None``: an anonymous one)."""
        return redis.Redis(
            host=self.settings.host,
            port=self.settings.redis_port,
            password=password,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
        )

    def probe(self, record: ProcessRecord | None = None) -> bool:
        try:
            password = redis_password(self.settings)
        except ConfigError:  # no password yet: nothing of ours can answer
            return False
        try:
            with self.client(password) as client:
                return client.ping() is True
        except redis.RedisError:
            return False

    def ready(self) -> None:
        """Refuse a Redis on our port that answers without the password.

        Raises:
            ComponentStartError: an anonymous client is served.
        """
        try:
            with self.client(None) as client:
                client.ping()
        except redis.AuthenticationError:
            return  # NOAUTH: as it should be
        except redis.RedisError as exc:
            raise ComponentStartError(
                f"redis: {self.url} stopped answering: {exc}", hint=self.fix_hint()
            ) from exc
        raise ComponentStartError(
            f"redis: {self.url} answers a client without the password: it was not started by this stack",
            hint="stop it and run shipline up, which starts Redis with the password in "
            f"{self.settings.redis_credentials}",
        )


@dataclass
class ProjectProcess(Component):
    """A component this project's Python runs (Prefect's server and workers, Shipline's daemons).

    It runs from the virtualenv's interpreter with the stack's Prefect settings in its environment.
    """

    package: str = "the project virtualenv (make install)"
    supervised: bool = True

    def resolve_binary(self) -> str | None:
        return sys.executable

    def environment(self) -> dict[str, str]:
        return {**os.environ, **self.settings.prefect_environment()}

    def logged_since_start(self, marker: str, record: ProcessRecord | None) -> bool:
        """True while our process runs and its log shows ``marker`` since its latest start: the probe of a
        daemon that serves nothing to ask."""
        if record is None or not record.alive:
            return False
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return False
        return marker in text[text.rfind(f"--- shipline: starting {self.name}") :]


def prefect_server_needs(settings: Settings) -> tuple[str, ...]:
    """What Prefect's server processes need running: the stack's PostgreSQL, its Redis, when used."""
    needs = []
    if settings.prefect_database == "postgresql" and not settings.prefect_database_url:
        needs.append("postgres")
    if settings.prefect_services == "split":
        needs.append("redis")
    return tuple(needs)


def prefect_server_settings(settings: Settings) -> dict[str, str]:
    """The settings of Prefect's server processes that are no secret (a unit may carry them): logging,
    CSRF and CORS, the database (unless SQLite under ``PREFECT_HOME``), and Redis's address when split."""
    environment = {
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        # A page of another origin may neither read answers nor change state (the UI is same-origin).
        "PREFECT_SERVER_CSRF_PROTECTION_ENABLED": "true",
        "PREFECT_SERVER_CORS_ALLOWED_ORIGINS": settings.prefect_url,
    }
    if (database := settings.prefect_database_connection_url) is not None:
        environment["PREFECT_API_DATABASE_CONNECTION_URL"] = database
    if settings.prefect_services == "split":
        environment |= settings.prefect_redis_environment()
    return environment


def prefect_server_environment(settings: Settings) -> dict[str, str]:
    """The environment of Prefect's server processes (the API, and its services when they run apart).

    Only they get the block-secret key, the auth string they require and, split, Redis's settings and
    password; Prefect's clients (workers, flow runs, the CLI, the daemons) need none of these.
    """
    environment = {
        **os.environ,
        **settings.prefect_environment(),
        **server_environment(settings),
        **prefect_server_settings(settings),
    }
    if settings.prefect_database_connection_url is None:
        environment.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)  # SQLite under PREFECT_HOME
    if settings.prefect_services == "split":
        environment[REDIS_PASSWORD_VARIABLE] = redis_password(settings)
    return environment


@dataclass
class PrefectServer(ProjectProcess):
    """Prefect's API and UI, with its background services in the same process unless they run apart
    (``SHIPLINE_PREFECT_SERVICES=split``: ``--no-services``, and ``PrefectServices`` runs them)."""

    name: str = "prefect"
    binary: str = "prefect"
    start_timeout: float = 180.0

    def __post_init__(self) -> None:
        self.port = self.settings.prefect_port
        self.needs = prefect_server_needs(self.settings)

    @property
    def url(self) -> str:
        return self.settings.prefect_url

    def environment(self) -> dict[str, str]:
        return prefect_server_environment(self.settings)

    def prepare(self) -> None:
        self.settings.prefect_home.mkdir(parents=True, exist_ok=True)
        ensure_api_credential(self.settings)
        adopt_encryption_key(self.settings)  # the server is stopped here: its database may give it up

    def ready(self) -> None:
        """Refuse a server on our port that answers without Shipline's credential, or one of ours that
        runs its services otherwise than ``prefect_services`` says.

        Raises:
            ComponentStartError: it takes an unauthenticated request, refuses the credential, or runs its
                services in the other way.
        """
        record = ProcessTable(self.settings.run_dir).running(self.name)
        if record is not None and ("--no-services" in record.command) != self.split:
            running, wanted = ("embedded", "apart") if self.split else ("apart", "embedded")
            raise ComponentStartError(
                f"prefect: the running server (pid {record.pid}) has its services {running}, and "
                f"SHIPLINE_PREFECT_SERVICES={self.settings.prefect_services} wants them {wanted}",
                hint="restart it so: shipline down, then shipline up",
            )
        url = f"{self.settings.prefect_api_url}/deployments/filter"
        try:
            with httpx.Client(timeout=5.0, trust_env=False) as client:
                # Without the credential: a read is refused (401), a change too — before that, for want
                # of a CSRF token (403), which only the credential obtains.
                anonymous = client.get(f"{self.settings.prefect_api_url}/admin/version").status_code
                ours = client.post(url, json={"limit": 1}, auth=prefect_auth(self.settings)).status_code
        except httpx.HTTPError as exc:
            raise ComponentStartError(f"prefect: {url} does not answer: {exc}", hint=self.fix_hint()) from exc
        if anonymous != 401:
            raise ComponentStartError(
                f"prefect: the server at {self.url} answers requests without a credential "
                f"({anonymous} to an anonymous GET of its version); it was not started by this stack",
                hint="stop it and run shipline up, which starts Prefect with its credential",
            )
        if ours != 200:
            raise ComponentStartError(
                f"prefect: the server at {self.url} answers {ours} with the credential in "
                f"{self.settings.prefect_client_credentials}",
                hint="it was started with another one: stop it and run shipline up",
            )

    @property
    def split(self) -> bool:
        return self.settings.prefect_services == "split"

    def command(self) -> list[str]:
        s = self.settings
        return [
            sys.executable,
            "-m",
            "shipline.stack.prefect_server",  # prefect, its SQLite writes begun IMMEDIATE
            "server",
            "start",
            "--host",
            s.host,
            "--port",
            str(s.prefect_port),
            *(["--no-services"] if self.split else []),
        ]

    def probe(self, record: ProcessRecord | None = None) -> bool:
        response = _http_ok(f"{self.settings.prefect_api_url}/health")
        return response is not None and response.text.strip() == "true"


SERVICES_READY = "Starting services"
"""What ``prefect server services start`` prints once its services are set to run."""


@dataclass
class PrefectServices(ProjectProcess):
    """Prefect's background services in a process of their own (``SHIPLINE_PREFECT_SERVICES=split``).

    The scheduler, the event persister, the task-run recorder, triggers and actions of automations,
    the late-run and cancellation loops and the rest: ``prefect server services start`` in the
    foreground, on the API's database, meeting the API in Redis (events, leases, Docket's tasks).
    Its launcher waits until the API answers, which migrates the database first.
    """

    name: str = "prefect-services"
    binary: str = "prefect"
    start_timeout: float = PrefectServer.start_timeout + 60.0

    def __post_init__(self) -> None:
        self.needs = (*prefect_server_needs(self.settings), "prefect")

    @property
    def url(self) -> str:
        return f"{self.settings.redis_url} (scheduler, events, automations)"

    def environment(self) -> dict[str, str]:
        return prefect_server_environment(self.settings)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "shipline.stack.prefect_server", "server", "services", "start"]

    def probe(self, record: ProcessRecord | None = None) -> bool:
        # It serves nothing to ask: it is up once its process says its services run.
        return self.logged_since_start(SERVICES_READY, record)


@dataclass
class DiscoverDaemon(ProjectProcess):
    """``shipline discover``: renders nginx from the instances registered in etcd."""

    name: str = "discover"
    binary: str = "shipline"
    start_timeout: float = 30.0

    def __post_init__(self) -> None:
        self.port = self.settings.discover_port
        self.engine = self.settings.edge_engine

    @property
    def url(self) -> str:
        return f"{self.settings.discover_url}/metrics"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "shipline", "discover"]

    def probe(self, record: ProcessRecord | None = None) -> bool:
        response = _http_ok(f"{self.settings.discover_url}/healthz")
        return response is not None and response.text == "ok\n"


@dataclass
class WebService(ProjectProcess):
    """``shipline web``: GitLab webhooks start deliveries."""

    name: str = "web"
    binary: str = "shipline"
    start_timeout: float = 30.0
    needs: tuple[str, ...] = ("prefect", "etcd")

    def __post_init__(self) -> None:
        self.port = self.settings.web_port

    @property
    def url(self) -> str:
        return f"{self.settings.webhook_url} (POST)"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "shipline", "web"]

    def probe(self, record: ProcessRecord | None = None) -> bool:
        response = _http_ok(f"{self.settings.web_url}/healthz")
        return response is not None and response.text == "ok"


def _engine_arguments(settings: Settings, engine: str) -> list[str]:
    """``--docker-host`` of a host's daemon: its engine (none for the stack's own, the daemons' default)."""
    return ["--docker-host", settings.engine_url(engine)] if engine else []


@dataclass
class RegistratorDaemon(ProjectProcess):
    """``shipline registrator``: one host's Shipline containers in etcd, at that host's address.

    With hosts of their own (the scale profile), each host runs one for its environments (``--env``), at
    its address (``--ip``) on its engine (``--docker-host``); the main host's keeps the others.
    """

    name: str = "registrator"
    binary: str = "shipline"
    start_timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.engine:
            self.name = f"registrator-{self.engine}"

    @property
    def ip(self) -> str:
        return self.settings.engines.get(self.engine, self.settings.host)

    @property
    def url(self) -> str:
        return f"{self.settings.etcd_url} (/{{APP}}_{{ENV}}/{self.ip}-{{PORT}})"

    def command(self) -> list[str]:
        scoped = []
        if self.settings.environment_hosts:  # each host registers its own environments only
            scoped = [f"--env={env}" for env in self.settings.engine_environments(self.engine)]
            scoped.append(f"--ip={self.ip}")
        return [
            sys.executable,
            "-m",
            "shipline",
            "registrator",
            *_engine_arguments(self.settings, self.engine),
            *scoped,
        ]

    def probe(self, record: ProcessRecord | None = None) -> bool:
        # It serves nothing to ask: it is up once its first resync with etcd and Docker is done.
        return self.logged_since_start("registrator ready", record)


@dataclass
class LogsAgent(ProjectProcess):
    """``shipline logs agent``: this host's Shipline container logs into the log store."""

    name: str = "logs-agent"
    binary: str = "shipline"
    start_timeout: float = 30.0

    def __post_init__(self) -> None:
        docker = f"docker-{self.engine}" if self.engine else "docker"
        self.needs = (docker, "postgres") if self.settings.log_store == "postgresql" else (docker,)
        if self.engine:
            self.name = f"logs-agent-{self.engine}"

    @property
    def url(self) -> str:
        return f"{self.settings.logs_page_url} (search)"

    def command(self) -> list[str]:
        named = ["--host-name", self.engine] if self.engine else []
        return [
            sys.executable,
            "-m",
            "shipline",
            "logs",
            "agent",
            *_engine_arguments(self.settings, self.engine),
            *named,
        ]

    def probe(self, record: ProcessRecord | None = None) -> bool:
        # It serves nothing to ask: it is up once its first scan of containers and checkpoints is done.
        from shipline.logs.agent import READY

        return self.logged_since_start(READY, record)


@dataclass
class FlowStarter(ProjectProcess):
    """``shipline.stack.flow_starter``: this host's flow runs forked with Prefect and the flows imported."""

    name: str = "flow-starter"
    binary: str = "shipline"
    start_timeout: float = 30.0

    @property
    def url(self) -> str:
        return str(self.settings.flow_starter_socket)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "shipline.stack.flow_starter",
            "serve",
            str(self.settings.flow_starter_socket),
        ]

    def probe(self, record: ProcessRecord | None = None) -> bool:
        return (
            self.logged_since_start("flow starter ready", record)
            and self.settings.flow_starter_socket.exists()
        )


@dataclass
class Worker(ProjectProcess):
    """A Prefect process worker serving one environment's work pool."""

    pool: str = "ci"
    binary: str = "prefect"
    start_timeout: float = 60.0
    needs: tuple[str, ...] = ("prefect", "flow-starter")

    def __post_init__(self) -> None:
        self.name = f"worker-{self.pool}"
        host = self.settings.host_of(self.pool)
        self.engine = host.engine if host else ""

    @property
    def worker_name(self) -> str:
        return f"shipline-{self.pool}"

    @property
    def url(self) -> str:
        return f"{self.settings.prefect_url}/work-pools/work-pool/{self.pool}"

    def environment(self) -> dict[str, str]:
        # Flows read which environment they run in from their worker. Its host's engine and address are
        # there for the operator's tools; the flows read them from the environment's block.
        host = self.settings.host_of(self.pool)
        return {
            **super().environment(),
            "SHIPLINE_WORKER_POOL": self.pool,
            "SHIPLINE_WORKER_NAME": self.worker_name,
            # Its flow runs start as children of this host's flow starter (the pools' command).
            "SHIPLINE_FLOW_STARTER_SOCKET": str(self.settings.flow_starter_socket),
            "DOCKER_HOST": self.settings.engine_url(self.engine),
            "SHIPLINE_ADVERTISE_IP": host.ip if host else self.settings.host,
        }

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "prefect",
            "worker",
            "start",
            "--pool",
            self.pool,
            "--type",
            "process",
            "--name",
            self.worker_name,
        ]

    def online_workers(self) -> list[dict[str, object]] | None:
        """Workers the Prefect API lists as ONLINE in this pool, or None if the API does not answer."""
        url = f"{self.settings.prefect_api_url}/work_pools/{self.pool}/workers/filter"
        try:
            with httpx.Client(
                timeout=PROBE_TIMEOUT, trust_env=False, auth=prefect_auth(self.settings)
            ) as client:
                response = client.post(url, json={})
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        return [w for w in response.json() if w.get("status") == "ONLINE"]

    def probe(self, record: ProcessRecord | None = None) -> bool:
        online = self.online_workers()
        if not online:
            return False
        if record is None:
            # Not ours: any worker serving the pool counts, except a stale entry of our own name.
            return any(w.get("name") != self.worker_name for w in online)
        started = datetime.fromtimestamp(record.started_at).astimezone()
        for worker in online:
            if worker.get("name") == self.worker_name:
                heartbeat = datetime.fromisoformat(str(worker["last_heartbeat_time"]))
                if heartbeat >= started:
                    return True
        return False


def infrastructure(settings: Settings) -> list[Component]:
    """The stack's servers, in start order; with hosts of their own (the scale profile), each host's
    Docker engine, registrator and logs agent too; with Prefect's services apart, Redis and them."""
    engines = list(settings.engines)
    split = settings.prefect_services == "split"
    return [
        DockerEngine(settings),
        *(DockerEngine(settings, engine=engine) for engine in engines),
        *etcd_members(settings),
        Registry(settings),
        Nginx(settings),
        Postgres(settings),
        *([Redis(settings)] if split else []),
        PrefectServer(settings),
        *([PrefectServices(settings)] if split else []),
        DiscoverDaemon(settings),
        RegistratorDaemon(settings),
        *(RegistratorDaemon(settings, engine=engine) for engine in engines),
        LogsAgent(settings),
        *(LogsAgent(settings, engine=engine) for engine in engines),
        WebService(settings),
        FlowStarter(settings),
    ]


def workers(settings: Settings) -> list[Worker]:
    """One process worker per environment's work pool."""
    return [Worker(settings, pool=pool) for pool in POOLS]
