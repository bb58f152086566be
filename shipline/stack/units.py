"""systemd units for Shipline's daemons on real hosts: the same commands ``shipline up`` supervises.

Each host runs the daemons of its role (``Restart=always``, one second apart, like the embedded stack's
supervisor):

- ``ci``: the ``ci`` pool's worker (builds);
- ``pre`` / ``prod``: that pool's worker, a registrator for that environment's containers and the logs
  agent (one per Docker host, whatever it runs);
- ``edge``: ``discover`` (nginx follows etcd) and ``web`` (GitLab webhooks);
- ``server``: Prefect's server (API and UI) and, when its services run apart
  (``SHIPLINE_PREFECT_SERVICES=split``), its background services and the Redis they meet the API in.

The units carry the Prefect settings of the host they are written on; edit ``PREFECT_API_URL`` and the
``SHIPLINE_*`` values for the host that will run them. etcd's credentials are never written into a unit:
it names the file (mode 0600) each daemon reads them from, which the operator copies to every host, and
so for etcd's TLS: the unit names the CA, certificate and key files.
Neither is Prefect's credential: each unit names the file ``up`` wrote (``EnvironmentFile=``, read by
systemd as root), which a host that runs no server gets as a copy, mode 0600. The server's units name
its block-secret key's file and Redis's password file so too, and Redis's unit its configuration (0600,
it holds the password); a database URL with a password is left out of the unit, for an
``EnvironmentFile=`` of the operator's.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from shipline.config import Settings
from shipline.files import write_atomically

Role = Literal["ci", "pre", "prod", "edge", "server"]
ROLES: tuple[Role, ...] = ("ci", "pre", "prod", "edge", "server")


@dataclass(frozen=True)
class ServerUnit:
    """A unit of the ``server`` role: its whole command line, and what it needs beyond a daemon's."""

    command: list[str]
    environment: dict[str, str] = field(default_factory=dict)
    environment_files: tuple[Path, ...] = ()
    after: tuple[str, ...] = ()
    program: bool = False
    """A program of its own (Redis): none of Prefect's or etcd's settings, no credentials file."""


def server_units(settings: Settings) -> dict[str, ServerUnit]:
    """Unit name → the server role's units: Prefect's API (and UI), and split, its services and Redis."""
    from shipline.stack.components import PrefectServer, PrefectServices, Redis, prefect_server_settings

    variables = prefect_server_settings(settings)
    database = variables.get("PREFECT_API_DATABASE_CONNECTION_URL", "")
    if database and urlsplit(database).password is not None:
        del variables["PREFECT_API_DATABASE_CONNECTION_URL"]  # a secret: in the operator's EnvironmentFile
    # Prefect's server requires PREFECT_SERVER_API_AUTH_STRING: its launcher takes the clients' (the
    # credentials file's PREFECT_API_AUTH_STRING) where it is not set.
    files: tuple[Path, ...] = (settings.prefect_server_credentials,)
    after: tuple[str, ...] = ("postgresql.service",)
    units: dict[str, ServerUnit] = {}
    split = settings.prefect_services == "split"
    if split:
        units["shipline-redis"] = ServerUnit(Redis(settings).command(), program=True)
        files += (settings.redis_credentials,)
        after += ("shipline-redis.service",)
    units["shipline-prefect"] = ServerUnit(PrefectServer(settings).command(), variables, files, after)
    if split:
        units["shipline-prefect-services"] = ServerUnit(
            PrefectServices(settings).command(), variables, files, (*after, "shipline-prefect.service")
        )
    return units


def daemons(role: Role, settings: Settings | None = None) -> dict[str, list[str]]:
    """Unit name → the ``python -m …`` arguments of each daemon of ``role``.

    Where ``settings`` give the role's environment a host of its own (``SHIPLINE_ENVIRONMENT_HOSTS``, the
    scale profile), its registrator and logs agent name that host's address and Docker engine.
    """
    if role == "server":
        return {}  # whole command lines, not ``python -m``: server_units
    if role == "edge":
        return {"shipline-discover": ["shipline", "discover"], "shipline-web": ["shipline", "web"]}
    worker = ["prefect", "worker", "start", "--pool", role, "--type", "process", "--name", f"shipline-{role}"]
    units = {
        f"shipline-worker-{role}": worker,
        # The worker's flow runs start as children of this (shipline.stack.flow_starter): one per host.
        "shipline-flow-starter": ["shipline.stack.flow_starter", "serve"],
    }
    if role != "ci":
        host = settings.host_of(role) if settings is not None else None
        registrator = ["shipline", "registrator", "--env", role]
        agent = ["shipline", "logs", "agent"]
        if host is not None and settings is not None:
            engine = settings.engine_url(host.engine)
            registrator += ["--ip", host.ip, "--docker-host", engine]
            agent += ["--docker-host", engine, "--host-name", host.engine]
        units[f"shipline-registrator-{role}"] = registrator
        units["shipline-logs-agent"] = agent
    return units


def render_unit(name: str, arguments: list[str], settings: Settings, server: ServerUnit | None = None) -> str:
    """The text of one unit file: a daemon's (``python -m`` and ``arguments``), or a server unit's."""
    variables = {
        **settings.prefect_environment(credentials=False),
        "SHIPLINE_ETCD_CREDENTIALS_FILE": str(settings.etcd_credentials_path),
        "SHIPLINE_FLOW_STARTER_SOCKET": str(settings.flow_starter_socket),
        **settings.etcd_environment(),  # a cluster's size and TLS files (paths, never their content)
    }
    files = [settings.prefect_client_credentials]
    after = ["network-online.target", "docker.service"]
    command = f"{sys.executable} -m {' '.join(arguments)}"
    if server is not None:
        variables |= server.environment
        files += server.environment_files
        after = ["network-online.target", *server.after]
        command = " ".join(server.command)
        if server.program:
            variables, files = {}, []
    environment = "".join(f"Environment={key}={value}\n" for key, value in variables.items())
    environment += "".join(f"EnvironmentFile={path}\n" for path in files)
    return f"""# Written by `shipline units`: {name}
[Unit]
Description=Shipline {name.removeprefix("shipline-")}
After={" ".join(after)}
Wants=network-online.target

[Service]
ExecStart={command}
{environment}Restart=always
RestartSec=1
KillMode=mixed
TimeoutStopSec=30

[Install]
WantedBy=multi-user.target
"""


def write_units(directory: Path, roles: list[Role], settings: Settings) -> list[Path]:
    """Write the units of ``roles`` into ``directory``; return their paths."""
    written = []
    for role in roles:
        for name, arguments in daemons(role, settings).items():
            path = directory / f"{name}.service"
            write_atomically(path, render_unit(name, arguments, settings))
            written.append(path)
        if role == "server":
            for name, unit in server_units(settings).items():
                path = directory / f"{name}.service"
                write_atomically(path, render_unit(name, [], settings, unit))
                written.append(path)
    return written
