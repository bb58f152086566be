"""Settings of the local stack and of Shipline's own processes.

Every value has a working local default and can be overridden by an environment variable named
``SHIPLINE_<FIELD>`` (for example ``SHIPLINE_HOME``, ``SHIPLINE_ETCD_PORT``). State lives under
``home``; nothing is written into the project tree.

A profile (``SHIPLINE_PROFILE``, or ``shipline up --profile``) picks another set of defaults:
``default`` is one host; ``scale`` (``ScaleSettings``) is a multi-host stack on one machine, in a home and
on ports of its own, PRE and PROD each on a Docker engine and a loopback address of their own.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from shipline.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The Shipline checkout: flows, templates and deployments are read from here."""

DEPLOYMENTS_DIR = PROJECT_ROOT / "deployments"


def _pool_names() -> tuple[str, ...]:
    with (DEPLOYMENTS_DIR / "work-pools.yaml").open() as handle:
        return tuple(pool["name"] for pool in yaml.safe_load(handle)["work_pools"])


POOLS: tuple[str, ...] = _pool_names()
"""Environments, each a Prefect work pool with its own worker (deployments/work-pools.yaml)."""
HEARTBEAT_SECONDS = 30
PREFECT_DATABASE = "shipline_prefect"
"""Prefect's database on the stack's own PostgreSQL (``SHIPLINE_PREFECT_DATABASE=postgresql``)."""
"""How often a flow run tells the Prefect server it is alive (Prefect's minimum)."""
UNRESPONSIVE_AFTER_SECONDS = 90
"""A running flow run silent for this long (its worker or host died) is marked Crashed."""

Port = int
MEMBER_COUNTS = (1, 3, 5, 7)
ARCHIVE_URL = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._~/+-]*)?")
"""A Debian archive's URL as the settings accept it: it goes into apt sources, so no spaces or options."""


@dataclass(frozen=True)
class EtcdTlsFiles:
    """PEM files of etcd's TLS: the CA, and one certificate (server and client) with its key."""

    ca: Path
    cert: Path
    key: Path


Profile = Literal["default", "scale"]
PROFILES: tuple[str, ...] = ("default", "scale")


def _loopback(value: str) -> str:
    try:
        address = ipaddress.ip_address(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IP address") from exc
    if not address.is_loopback:
        raise ValueError(f"{value} is not a loopback address; the local stack binds to 127.0.0.0/8 only")
    return value


class EnvironmentHost(BaseModel):
    """The (simulated) host an environment's instances run on: its Docker engine and its address."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    engine: str = Field(
        pattern=r"^[a-z0-9][a-z0-9-]{0,15}$",
        description="Name of a Docker engine the stack starts for this host (docker-{engine}).",
    )
    ip: str = Field(description="The host's advertise address: instances bind to it, etcd and nginx name it.")

    @field_validator("ip")
    @classmethod
    def _loopback_ip(cls, value: str) -> str:
        return _loopback(value)


class Settings(BaseSettings):
    """Where the local stack listens and keeps its state.

    Raises:
        ConfigError: from ``load_settings`` when an override is invalid.
    """

    model_config = SettingsConfigDict(env_prefix="SHIPLINE_", frozen=True, extra="ignore")

    profile: Profile = Field(default="default", description="Which set of defaults (load_settings).")
    home: Path = Field(default=Path("~/.shipline"), description="State, pid files and logs.")
    host: str = Field(default="127.0.0.1", description="Loopback address every component binds to.")
    prefect_port: Port = 4200
    etcd_port: Port = 2379
    etcd_peer_port: Port = 2380
    etcd_members: int = Field(
        default=1,
        description="etcd members the stack runs on loopback: 1, or an odd number up to 7 for a cluster. "
        "Member i (from 0) listens on etcd_port + 2i (clients) and etcd_peer_port + 2i (peers); every "
        "client is given every member's URL.",
    )
    etcd_tls: bool = Field(
        default=False,
        description="TLS between etcd members and for every client (client certificates required). The "
        "stack generates a CA and certificates under home unless etcd_ca_file/cert_file/key_file name "
        "real ones.",
    )
    etcd_ca_file: Path | None = Field(default=None, description="CA that signed every etcd certificate.")
    etcd_cert_file: Path | None = Field(
        default=None,
        description="This host's certificate, valid as server and as client (etcd members and Shipline "
        "clients both use it).",
    )
    etcd_key_file: Path | None = Field(default=None, description="The private key of etcd_cert_file.")
    etcd_credentials_file: Path | None = Field(
        default=None,
        description="etcd's Shipline user and password (ETCDCTL_USER=shipline:..., mode 0600), written once "
        "by shipline up; default: credentials/etcd.env under home.",
    )
    registry_port: Port = 5000
    nginx_port: Port = 8080
    nginx_mode: Literal["auto", "dynamic", "template"] = Field(
        default="auto",
        description="How nginx follows etcd: dynamic (Lua routing table, no reloads), template (files + "
        "reload), or auto (dynamic where nginx's Lua module is installed).",
    )
    discover_port: Port = 9105
    web_port: Port = Field(default=8090, description="shipline web: GitLab webhooks and the log page.")
    postgres_port: Port = Field(default=5433, description="PostgreSQL the stack starts for shared logs.")
    redis_port: Port = Field(
        default=6380,
        description="Redis the stack starts when Prefect's API and services run apart (prefect_services); "
        "not 6379, which a Redis of the machine's own may hold.",
    )
    log_store: Literal["sqlite", "postgresql"] = Field(
        default="sqlite", description="Where the logs agent writes: embedded SQLite, or PostgreSQL (hosts)."
    )
    log_store_url: str = Field(
        default="", description="PostgreSQL URL of the log store (default: the stack's own server)."
    )
    prefect_database: Literal["sqlite", "postgresql"] = Field(
        default="sqlite",
        description="Where the Prefect server keeps its state: embedded SQLite (one machine), or "
        "PostgreSQL (the stack's own server, or SHIPLINE_PREFECT_DATABASE_URL): more than one worker host.",
    )
    prefect_database_url: str = Field(
        default="",
        description="SQLAlchemy URL of Prefect's PostgreSQL (postgresql+asyncpg://…); default: a database on "
        "the stack's own server.",
    )
    prefect_services: Literal["embedded", "split"] = Field(
        default="embedded",
        description="Where Prefect's background services run (scheduler, event persister, task-run "
        "recorder, automations): embedded in the API's process, or split into a process of their own "
        "(prefect-services), both meeting in the stack's Redis.",
    )
    log_tokenizer: Literal["trigram", "unicode61"] = Field(
        default="trigram",
        description="SQLite tokenizer of new day partitions: trigram (substrings, any script) or unicode61.",
    )
    docker_socket: Path = Field(default=Path("/var/run/docker.sock"), description="Docker Engine socket.")
    docker_storage_driver: str = Field(
        default="auto", description="overlay2, vfs, or auto (overlay2 where it works)."
    )
    debian_mirror: str = Field(
        default="http://deb.debian.org/debian", description="Debian mirror of debootstrap and of OS images."
    )
    debian_security_mirror: str = Field(
        default="http://deb.debian.org/debian-security",
        description="Where OS images get the Debian security suite ({suite}-security): in their apt sources, "
        "applied when an OS layer is built, and what the base-images report checks; empty: none.",
    )
    debian_keyring: Path = Field(
        default=Path("/usr/share/keyrings/debian-archive-keyring.gpg"),
        description="The Debian archive keyring debootstrap checks the mirror's signatures with.",
    )
    worker_query_seconds: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="How often each worker asks Prefect for runs to start: a release waits for its "
        "worker's next poll twice on the way to PROD (PRE, then PROD), half of this on average each time.",
    )
    start_timeout_seconds: float = Field(default=120.0, gt=0)
    environment_hosts: dict[str, EnvironmentHost] = Field(
        default_factory=dict,
        description="Environments that run on a host of their own (JSON: env -> {engine, ip}); the stack "
        "starts a Docker engine, a registrator and a logs agent per host. Others run on the stack's engine "
        "at host.",
    )

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("etcd_credentials_file", "etcd_ca_file", "etcd_cert_file", "etcd_key_file", mode="after")
    @classmethod
    def _expand_credentials(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @field_validator("etcd_members")
    @classmethod
    def _odd_members(cls, value: int) -> int:
        # An even cluster tolerates no more failures than the odd one below it, and needs more for quorum.
        if value not in MEMBER_COUNTS:
            raise ValueError(f"{value} is not 1, 3, 5 or 7 etcd members")
        return value

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        return _loopback(value)

    @field_validator("environment_hosts")
    @classmethod
    def _one_address_per_engine(cls, value: dict[str, EnvironmentHost]) -> dict[str, EnvironmentHost]:
        addresses: dict[str, str] = {}
        for env, host in value.items():
            if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", env):
                raise ValueError(f"{env!r} is not an environment name")
            if addresses.setdefault(host.engine, host.ip) != host.ip:
                raise ValueError(
                    f"engine {host.engine!r} is given two addresses, {addresses[host.engine]} and {host.ip}"
                )
        return value

    @field_validator(
        "prefect_port",
        "etcd_port",
        "etcd_peer_port",
        "registry_port",
        "nginx_port",
        "discover_port",
        "web_port",
        "postgres_port",
        "redis_port",
    )
    @classmethod
    def _port_range(cls, value: int) -> int:
        if not 1 <= value <= 65535:
            raise ValueError(f"{value} is not a TCP port (1-65535)")
        return value

    @field_validator("debian_mirror", "debian_security_mirror")
    @classmethod
    def _archive_url(cls, value: str, info: ValidationInfo) -> str:
        # The URL is written into every OS image's apt sources: one http(s) URL, nothing else on the line.
        if (value or info.field_name == "debian_mirror") and not ARCHIVE_URL.fullmatch(value):
            raise ValueError(f"{value!r} is not an http:// or https:// URL of a Debian archive")
        return value.rstrip("/")

    @field_validator("docker_storage_driver")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if value not in {"auto", "overlay2", "vfs"}:
            raise ValueError(f"{value!r} is not one of auto, overlay2, vfs")
        return value

    @model_validator(mode="after")
    def _real_certificates_all_or_none(self) -> Settings:
        given = [self.etcd_ca_file, self.etcd_cert_file, self.etcd_key_file]
        if any(given) and not all(given):
            raise ValueError(
                "SHIPLINE_ETCD_CA_FILE, SHIPLINE_ETCD_CERT_FILE and SHIPLINE_ETCD_KEY_FILE go together: "
                "name all three, or none for the certificates the stack generates"
            )
        return self

    @model_validator(mode="after")
    def _split_services_on_postgresql(self) -> Settings:
        # On SQLite, an automation created or changed through the API reaches only the API's process;
        # Prefect tells the other processes through PostgreSQL's LISTEN/NOTIFY.
        if self.prefect_services == "split" and self.prefect_database != "postgresql":
            raise ValueError(
                "SHIPLINE_PREFECT_SERVICES=split needs SHIPLINE_PREFECT_DATABASE=postgresql: on SQLite, "
                "automations created or changed through the API never reach the services' process"
            )
        return self

    @model_validator(mode="after")
    def _distinct_ports(self) -> Settings:
        ports = {
            "prefect_port": self.prefect_port,
            "etcd_port": self.etcd_port,
            "etcd_peer_port": self.etcd_peer_port,
            **{
                f"etcd member {index + 1}'s {kind} port": base + 2 * index
                for index in range(1, self.etcd_members)
                for kind, base in (("client", self.etcd_port), ("peer", self.etcd_peer_port))
            },
            "registry_port": self.registry_port,
            "nginx_port": self.nginx_port,
            "discover_port": self.discover_port,
            "web_port": self.web_port,
            "postgres_port": self.postgres_port,
            "redis_port": self.redis_port,
        }
        seen: dict[int, str] = {}
        for name, port in ports.items():
            if not 1 <= port <= 65535:
                raise ValueError(f"{name} would be {port}, not a TCP port")
            if port in seen:
                raise ValueError(f"{name} and {seen[port]} are both {port}")
            seen[port] = name
        return self

    # Derived locations. Properties, so that one override of ``home`` moves everything.
    @cached_property
    def run_dir(self) -> Path:
        return self.home / "run"

    @cached_property
    def flow_starter_socket(self) -> Path:
        """Where this host's flow starter takes its flow runs' launchers (``shipline.stack.flow_starter``)."""
        return self.run_dir / "flow-starter.sock"

    @cached_property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @cached_property
    def nginx_dir(self) -> Path:
        return self.home / "nginx"

    @cached_property
    def nginx_conf_dir(self) -> Path:
        """Where service discovery writes one file per app and environment."""
        return self.nginx_dir / "conf.d"

    @cached_property
    def nginx_admin_socket(self) -> Path:
        """The dynamic routing table's admin API: a unix socket, its directory the stack user's alone."""
        return self.nginx_dir / "admin" / "routes.sock"

    @cached_property
    def log_store_dir(self) -> Path:
        """The embedded log store and the logs agent's state."""
        return self.home / "logstore"

    @cached_property
    def postgres_dir(self) -> Path:
        return self.home / "postgres"

    @cached_property
    def workspaces_dir(self) -> Path:
        """Checkouts and build outputs, one directory per delivery run (named by its flow run id)."""
        return self.home / "workspaces"

    @cached_property
    def releases_dir(self) -> Path:
        """Rendered compose files, one directory per release: ``{app}/{env}/{number}/``."""
        return self.home / "releases"

    @property
    def postgres_url(self) -> str:
        """The log store's PostgreSQL: the configured URL, else the stack's own server."""
        return self.log_store_url or f"postgresql://shipline@{self.host}:{self.postgres_port}/shipline_logs"

    @property
    def prefect_database_connection_url(self) -> str | None:
        """Prefect's ``PREFECT_API_DATABASE_CONNECTION_URL``; None: embedded SQLite under ``prefect_home``."""
        if self.prefect_database == "sqlite":
            return None
        own = f"postgresql+asyncpg://shipline@{self.host}:{self.postgres_port}/{PREFECT_DATABASE}"
        return self.prefect_database_url or own

    @cached_property
    def redis_dir(self) -> Path:
        """The stack's Redis: its configuration (0600, it holds the password) and its data."""
        return self.home / "redis"

    @cached_property
    def redis_credentials(self) -> Path:
        """``PREFECT_REDIS_MESSAGING_PASSWORD=…``: the password of the stack's Redis (0600), for the two
        Prefect server processes alone; an environment file, so that a unit names it."""
        return self.credentials_dir / "redis.env"

    @property
    def redis_url(self) -> str:
        """Where the stack's Redis listens (no password: that is in ``redis_credentials``)."""
        return f"redis://{self.host}:{self.redis_port}"

    def prefect_redis_environment(self) -> dict[str, str]:
        """What Prefect's API and services processes need to meet in the stack's Redis (no password).

        Events, their cache and causal ordering, concurrency leases and Docket's background tasks go
        through Redis instead of each process's memory (prefect-redis). Docket's URL gets the password
        from ``PREFECT_REDIS_MESSAGING_PASSWORD`` when the server starts (``shipline.stack.prefect_server``).
        """
        return {
            "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
            "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
            "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
            "PREFECT_REDIS_MESSAGING_HOST": self.host,
            "PREFECT_REDIS_MESSAGING_PORT": str(self.redis_port),
            "PREFECT_REDIS_MESSAGING_DB": "0",
            "PREFECT_SERVER_DOCKET_URL": f"{self.redis_url}/1",
        }

    @property
    def logs_page_url(self) -> str:
        return f"{self.web_url}/logs"

    @cached_property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @cached_property
    def credentials_dir(self) -> Path:
        """Credentials ``up`` generates once: a directory only the stack's user may enter, files 0600."""
        return self.home / "credentials"

    @cached_property
    def prefect_client_credentials(self) -> Path:
        """``PREFECT_API_AUTH_STRING=…``: what every Prefect client (CLI, worker, daemon, test) sends.

        An environment file, so that a systemd unit names it (``EnvironmentFile=``) instead of holding it.
        """
        return self.credentials_dir / "prefect-api.env"

    @cached_property
    def prefect_server_credentials(self) -> Path:
        """``PREFECT_SERVER_ENCRYPTION_KEY=…``: the key of block secrets, for the Prefect server alone."""
        return self.credentials_dir / "prefect-server.env"

    @property
    def prefect_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"{self.prefect_url}/api"

    @property
    def etcd_scheme(self) -> str:
        return "https" if self.etcd_tls else "http"

    @property
    def etcd_client_urls(self) -> list[str]:
        """Each member's client URL, the first member's first."""
        return [
            f"{self.etcd_scheme}://{self.host}:{self.etcd_port + 2 * i}" for i in range(self.etcd_members)
        ]

    @property
    def etcd_url(self) -> str:
        """Every member's client URL, comma-separated: what clients are given (etcdctl's ``--endpoints``)."""
        return ",".join(self.etcd_client_urls)

    @cached_property
    def etcd_tls_dir(self) -> Path:
        """The CA and certificates the stack generates when etcd speaks TLS and none are named."""
        return self.home / "etcd-tls"

    @property
    def etcd_generates_tls(self) -> bool:
        """True when the stack makes etcd's CA and certificates itself (TLS on, no real ones named)."""
        return self.etcd_tls and self.etcd_ca_file is None

    @property
    def etcd_tls_files(self) -> EtcdTlsFiles | None:
        """What Shipline's clients present and trust; None when etcd speaks plain gRPC."""
        if not self.etcd_tls:
            return None
        if self.etcd_ca_file and self.etcd_cert_file and self.etcd_key_file:
            return EtcdTlsFiles(ca=self.etcd_ca_file, cert=self.etcd_cert_file, key=self.etcd_key_file)
        directory = self.etcd_tls_dir
        return EtcdTlsFiles(
            ca=directory / "ca.crt", cert=directory / "client.crt", key=directory / "client.key"
        )

    @property
    def etcd_member_tls_files(self) -> EtcdTlsFiles | None:
        """What the stack's etcd members serve clients and peers with; None without TLS."""
        if not self.etcd_generates_tls:
            return self.etcd_tls_files
        directory = self.etcd_tls_dir
        return EtcdTlsFiles(
            ca=directory / "ca.crt", cert=directory / "member.crt", key=directory / "member.key"
        )

    def etcdctl_arguments(self) -> list[str]:
        """etcdctl's flags to reach the stack's etcd: every member, and the TLS files when it has TLS."""
        arguments = [f"--endpoints={self.etcd_url}"]
        if (files := self.etcd_tls_files) is not None:
            arguments += [f"--cacert={files.ca}", f"--cert={files.cert}", f"--key={files.key}"]
        return arguments

    def etcd_environment(self) -> dict[str, str]:
        """The etcd settings another process needs to reach the same cluster (none by default)."""
        environment: dict[str, str] = {}
        if self.etcd_members != 1:
            environment["SHIPLINE_ETCD_MEMBERS"] = str(self.etcd_members)
        if (files := self.etcd_tls_files) is not None:
            environment |= {
                "SHIPLINE_ETCD_TLS": "true",
                "SHIPLINE_ETCD_CA_FILE": str(files.ca),
                "SHIPLINE_ETCD_CERT_FILE": str(files.cert),
                "SHIPLINE_ETCD_KEY_FILE": str(files.key),
            }
        return environment

    @cached_property
    def etcd_credentials_path(self) -> Path:
        """The etcd user every Shipline process connects as (``ETCDCTL_USER=shipline:…``, mode 0600)."""
        return self.etcd_credentials_file or self.home / "credentials" / "etcd.env"

    @cached_property
    def etcd_root_credentials_path(self) -> Path:
        """etcd's root user, beside Shipline's: ``up`` and operators administer users and roles with it."""
        return self.etcd_credentials_path.with_name("etcd-root.env")

    @cached_property
    def docker_config_dir(self) -> Path:
        """The Docker client configuration ``docker compose`` gets: the registry's login (0700 / 0600)."""
        return self.home / "docker-config"

    @cached_property
    def registry_credentials_file(self) -> Path:
        """The stack registry's login (JSON, mode 0600, in a 0700 directory), generated once by ``up``."""
        return self.home / "registry" / "auth" / "credentials.json"

    @cached_property
    def registry_htpasswd_file(self) -> Path:
        """The login's bcrypt hash, which the stack's registry checks (mode 0600)."""
        return self.home / "registry" / "auth" / "htpasswd"

    def registry_login(self) -> tuple[str, SecretStr] | None:
        """The stack registry's user name and password, or None before ``shipline up`` generated them.

        Raises:
            ConfigError: if the credentials file is unreadable or damaged.
        """
        path = self.registry_credentials_file
        try:
            document = json.loads(path.read_text())
            return str(document["username"]), SecretStr(str(document["password"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"the registry's credentials file {path} cannot be read ({type(exc).__name__})",
                hint="remove it and its htpasswd beside it, then `shipline down` and `shipline up` make new "
                "ones (and save them into the shipline-registry block)",
            ) from exc

    @property
    def registry_address(self) -> str:
        """Registry host:port as it appears in image references."""
        return f"{self.host}:{self.registry_port}"

    @property
    def web_url(self) -> str:
        return f"http://{self.host}:{self.web_port}"

    @property
    def webhook_url(self) -> str:
        """Where GitLab sends its webhooks."""
        return f"{self.web_url}/hooks/gitlab"

    @property
    def nginx_url(self) -> str:
        return f"http://{self.edge_host}:{self.nginx_port}"

    @property
    def discover_url(self) -> str:
        """discover's status server (``/metrics``, ``/healthz``), on the edge host beside nginx."""
        return f"http://{self.edge_host}:{self.discover_port}"

    def app_url(self, app: str, env: str) -> str:
        """Where an app's environment is served through nginx, for people (a notice, ``shipline up``).

        ``*.localhost`` resolves to 127.0.0.1; an edge host of another address gets curl's ``--resolve``.
        """
        url = f"http://{app}.{env}.localhost:{self.nginx_port}/"
        if self.edge_host == "127.0.0.1":
            return url
        resolve = f"{app}.{env}.localhost:{self.nginx_port}:{self.edge_host}"
        return f"{url} (the edge host {self.edge_host}: curl --resolve {resolve} {url})"

    @property
    def docker_url(self) -> str:
        return f"unix://{self.docker_socket}"

    @property
    def engines(self) -> dict[str, str]:
        """The Docker engines of the hosts of ``environment_hosts``: engine name -> its address."""
        return {host.engine: host.ip for host in self.environment_hosts.values()}

    def engine_socket(self, engine: str) -> Path:
        """The unix socket of a host's Docker engine (``""``: the stack's own engine)."""
        return self.run_dir / f"docker-{engine}.sock" if engine else self.docker_socket

    def engine_url(self, engine: str) -> str:
        """``unix://…`` of a host's Docker engine (``""``: the stack's own engine)."""
        return f"unix://{self.engine_socket(engine)}"

    def host_of(self, env: str) -> EnvironmentHost | None:
        """The host of its own that ``env`` runs on, or None: the stack's engine, at ``host``."""
        return self.environment_hosts.get(env)

    def engine_environments(self, engine: str) -> list[str]:
        """The environments whose instances run on ``engine`` (``""``: those of no host of their own)."""
        if engine:
            return [env for env, host in self.environment_hosts.items() if host.engine == engine]
        return [env for env in POOLS if env not in self.environment_hosts]

    @property
    def edge_engine(self) -> str:
        """The host that runs nginx and discover: PROD's (``""``: the stack's own)."""
        prod = self.host_of("prod")
        return prod.engine if prod else ""

    @property
    def edge_host(self) -> str:
        """The address nginx and discover listen on: PROD's host's, else the stack's own (``host``)."""
        prod = self.host_of("prod")
        return prod.ip if prod else self.host

    def prefect_environment(self, *, credentials: bool = True) -> dict[str, str]:
        """Prefect settings shared by the server, the workers and Shipline's own client calls.

        Args:
            credentials: Include the API credential (``prefect_client_credentials``, once ``up`` has
                written it); False for text that others may read, such as a systemd unit.
        """
        environment = {
            "PREFECT_HOME": str(self.prefect_home),
            "PREFECT_API_URL": self.prefect_api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": str(self.worker_query_seconds),
            # Pipeline steps persist their results so that a run retried from the UI skips finished steps.
            "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
            # Runs prove they are alive; the automation `provision` applies crashes a run that stops.
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
            "PREFECT_LOCAL_STORAGE_PATH": str(self.prefect_home / "storage"),
            # The server refuses state changes without a token it issued (the client fetches one).
            "PREFECT_CLIENT_CSRF_SUPPORT_ENABLED": "true",
            # While its database restarts, Prefect's server answers 500 to what cannot connect (a refused
            # connection is not one of the errors it maps to 503): clients retry it like a 503, with
            # backoff (about a minute in all), so runs in flight and workers ride out the restart.
            "PREFECT_CLIENT_RETRY_EXTRA_CODES": "500",
            "SHIPLINE_PROJECT_DIR": str(PROJECT_ROOT),
            "SHIPLINE_PROFILE": self.profile,
            "SHIPLINE_HOME": str(self.home),
        }
        if credentials:
            environment |= read_environment_file(self.prefect_client_credentials)
        return environment


def read_environment_file(path: Path) -> dict[str, str]:
    """The ``KEY=value`` lines of an environment file (as systemd reads them); empty if there is none.

    Raises:
        ConfigError: if the file exists but cannot be read (its owner or mode is wrong).
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(
            f"cannot read {path}: {exc.strerror}", hint="run Shipline as the user that ran shipline up"
        ) from exc
    pairs = (line.partition("=") for line in text.splitlines() if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, _, value in pairs}


SCALE_PORT_OFFSET = 100
"""The scale profile's ports are the default profile's plus this, so both stacks run side by side."""


class ScaleSettings(Settings):
    """The ``scale`` profile: a multi-host stack on one machine, beside the default one.

    Its own home and ports (the default ones + 100); Prefect and the log store on its PostgreSQL, Prefect's
    API and its background services two processes meeting in Redis; a 3-member etcd cluster over TLS; PRE and
    PROD each on a host of their own, simulated by a Docker engine of their own and an address of their
    own in 127.0.0.0/8 (ci stays on the stack's engine). Every value is still overridable by its variable.
    """

    profile: Profile = "scale"
    home: Path = Path("~/.shipline-scale")
    prefect_port: Port = 4200 + SCALE_PORT_OFFSET
    etcd_port: Port = 2379 + SCALE_PORT_OFFSET
    etcd_peer_port: Port = 2380 + SCALE_PORT_OFFSET
    registry_port: Port = 5000 + SCALE_PORT_OFFSET
    nginx_port: Port = 8080 + SCALE_PORT_OFFSET
    discover_port: Port = 9105 + SCALE_PORT_OFFSET
    web_port: Port = 8090 + SCALE_PORT_OFFSET
    postgres_port: Port = 5433 + SCALE_PORT_OFFSET
    redis_port: Port = 6380 + SCALE_PORT_OFFSET
    prefect_database: Literal["sqlite", "postgresql"] = "postgresql"
    prefect_services: Literal["embedded", "split"] = "split"
    log_store: Literal["sqlite", "postgresql"] = "postgresql"
    etcd_members: int = 3
    etcd_tls: bool = True
    environment_hosts: dict[str, EnvironmentHost] = Field(
        default_factory=lambda: {
            "pre": EnvironmentHost(engine="pre", ip="127.0.0.2"),
            "prod": EnvironmentHost(engine="prod", ip="127.0.0.3"),
        }
    )


def load_settings(profile: str | None = None) -> Settings:
    """Read settings from the environment.

    Args:
        profile: The profile whose defaults apply (default: ``SHIPLINE_PROFILE``, else ``default``).

    Returns:
        The validated settings.

    Raises:
        ConfigError: naming the variable that holds an invalid value.
    """
    chosen = profile or os.environ.get("SHIPLINE_PROFILE") or "default"
    if chosen not in PROFILES:
        raise ConfigError(
            f"there is no profile {chosen!r}", hint=f"choose one of {', '.join(PROFILES)} (SHIPLINE_PROFILE)"
        )
    try:
        return ScaleSettings(profile="scale") if chosen == "scale" else Settings(profile="default")
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            if not error["loc"]:  # a check across fields: its message names them
                problems.append(error["msg"])
                continue
            variable = f"SHIPLINE_{str(error['loc'][0]).upper()}"
            problems.append(f"{variable}={os.environ.get(variable, '')!r}: {error['msg']}")
        raise ConfigError(
            "invalid Shipline settings: " + "; ".join(problems),
            hint="fix or unset the variables named above",
        ) from exc
