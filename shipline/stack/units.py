"""systemd units for Shipline's daemons on real hosts: the same commands ``shipline up`` supervises.

Each host runs the daemons of its role (``Restart=always``, one second apart, like the embedded stack's
supervisor):

- ``ci``: the ``ci`` pool's worker (builds);
- ``pre`` / ``prod``: that pool's worker, a registrator for that environment's containers and the logs
  agent (one per Docker host, whatever it runs);
- ``edge``: ``discover`` (nginx follows etcd) and ``web`` (GitLab webhooks).

The units carry the Prefect settings of the host they are written on; edit ``PREFECT_API_URL`` and the
``SHIPLINE_*`` values for the host that will run them. etcd's credentials are never written into a unit:
it names the file (mode 0600) each daemon reads them from, which the operator copies to every host, and
so for etcd's TLS: the unit names the CA, certificate and key files.
Neither is Prefect's credential: each unit names the file ``up`` wrote (``EnvironmentFile=``, read by
systemd as root), which a host that runs no server gets as a copy, mode 0600.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from shipline.config import Settings
from shipline.files import write_atomically

Role = Literal["ci", "pre", "prod", "edge"]
ROLES: tuple[Role, ...] = ("ci", "pre", "prod", "edge")


def daemons(role: Role, settings: Settings | None = None) -> dict[str, list[str]]:
    """Unit name → the ``python -m …`` arguments of each daemon of ``role``.

    Where ``settings`` give the role's environment a host of its own (``SHIPLINE_ENVIRONMENT_HOSTS``, the
    scale profile), its registrator and logs agent name that host's address and Docker engine.
    """
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


def render_unit(name: str, arguments: list[str], settings: Settings) -> str:
    """The text of one unit file."""
    variables = {
        **settings.prefect_environment(credentials=False),
        "SHIPLINE_ETCD_CREDENTIALS_FILE": str(settings.etcd_credentials_path),
        "SHIPLINE_FLOW_STARTER_SOCKET": str(settings.flow_starter_socket),
        **settings.etcd_environment(),  # a cluster's size and TLS files (paths, never their content)
    }
    environment = "\n".join(f"Environment={key}={value}" for key, value in variables.items())
    return f"""# Written by `shipline units`: {name}
[Unit]
Description=Shipline {name.removeprefix("shipline-")}
After=network-online.target docker.service
Wants=network-online.target

[Service]
ExecStart={sys.executable} -m {" ".join(arguments)}
{environment}
EnvironmentFile={settings.prefect_client_credentials}
Restart=always
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
    return written
