"""Block type for a delivery environment (ci, pre, prod)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field, field_validator, model_validator

from blocks.documents import load_document
from shipline.build.gates import (
    DEFAULT_MAX_FINDINGS,
    DeliveryGates,
    EnvironmentGates,
    FindingLimits,
    ScanTools,
    SonarApps,
    delivery_gates,
    gated_environments,
)
from shipline.capabilities import capability_names
from shipline.docker import NOBODY, JobNetwork, JobResources, JobUser
from shipline.mounts import HostMount, refused_entries
from shipline.names import validate_name

JAVA_ON_THE_HOST = [HostMount(path="/usr/lib/jvm"), HostMount(path="/etc/java-17-openjdk")]
"""The default allow-list: Debian's JDK/JRE and its configuration, read-only (the Java sample's mounts)."""


class ShiplineEnvironment(Block):
    """Where an environment's instances run and how they are reached.

    One document per environment, named after it (``ci``, ``pre``, ``prod``); its work pool has the same
    name. At scale, point ``docker_host`` at the environment's Docker host and ``advertise_ip`` at the
    address that nginx on other hosts reaches it by.
    """

    _block_type_name: ClassVar[str] = "Shipline Environment"
    _block_type_slug: ClassVar[str] = "shipline-environment"
    _description: ClassVar[str] = (
        "A delivery environment: its Docker host, ports, replicas and approval policy."
    )

    work_pool: str = Field(description="Prefect work pool whose worker runs this environment's steps.")
    advertise_ip: str = Field(default="127.0.0.1", description="Address registered in etcd for instances.")
    docker_host: str = Field(default="unix:///var/run/docker.sock", description="Docker Engine URL.")
    port_range_start: int = Field(default=20000, ge=1024, le=65535)
    port_range_end: int = Field(default=20999, ge=1024, le=65535)
    replicas: int = Field(
        default=1, ge=1, le=64, description="Default instances per app (the app spec may override)."
    )
    requires_approval: bool = Field(
        default=False, description="Pause for an operator's approval before deploying."
    )
    requires_passed: list[str] | None = Field(
        default=None,
        description="Environments where the same image digest must have gone live first. Unset: prod "
        "requires pre, others nothing; an empty list lets any digest in.",
    )

    host_mounts: list[HostMount] = Field(
        default_factory=lambda: list(JAVA_ON_THE_HOST),
        description="Host paths an app's spec may mount here (and anything below them), read-only unless "
        "read_write. The root, /etc itself, /proc, /sys, /root, Docker's socket and data and Shipline's "
        "home are refused.",
    )

    job_memory: str = Field(
        default="2g",
        pattern=r"^[1-9][0-9]*[kmg]$",
        description="Memory of each job container here (build, unit test, auto-test command), no swap: "
        "a job that needs more is killed and its stage fails naming this field.",
    )
    job_cpus: float = Field(default=2.0, gt=0, le=256, description="CPUs of each job container here.")
    job_uid: int = Field(
        default=NOBODY.uid,
        ge=1,
        le=2**31 - 1,
        description="User every job container here runs as (never root); the workspace is made writable "
        "for it. Default: nobody.",
    )
    job_gid: int = Field(
        default=NOBODY.gid, ge=1, le=2**31 - 1, description="Group of the job containers here."
    )
    job_network: JobNetwork = Field(
        default="none",
        description="Network of the build and unit-test containers (block 'ci'): none, or the host's "
        "(they then reach every service on the host's loopback). Auto-test commands always get the "
        "host's: they must reach the instances.",
    )

    allowed_capabilities: list[str] = Field(
        default_factory=list,
        description="Linux capabilities an app's spec may give its instances here (service.capabilities), "
        "e.g. NET_BIND_SERVICE. Empty by default: instances run with none.",
    )
    instance_pids_limit: int = Field(
        default=1024,
        ge=16,
        le=4_194_304,
        description="Processes and threads each app instance here may have at once; past it, forks fail.",
    )

    require_tests: bool = Field(
        default=True,
        description="Gate: a delivery built in ci or released here needs unit tests (a test section in the "
        "spec, and at least one test case that ran). The gates of the ci block and of every environment a "
        "delivery releases to apply; of each rule the strictest wins, and a spec may only add to them.",
    )
    required_scan_tools: ScanTools = Field(
        default_factory=list,
        description="Gate: local scan tools (ruff, bandit) every spec must list in scan.tools; they run "
        "even where SonarQube analyses the app.",
    )
    max_findings: FindingLimits = Field(
        default_factory=lambda: dict(DEFAULT_MAX_FINDINGS),
        description="Gate: the most findings a spec may allow per key (ruff, bandit-high, bandit-medium, "
        "bandit-low) for the tools it runs; a spec that allows more, or leaves a key out, is held to this.",
    )
    require_sonarqube: SonarApps = Field(
        default=False,
        description="Gate: SonarQube's quality gate is required — true for every app, or a list of app "
        "names; such a spec must set scan.sonar_project_key and a shipline-sonarqube block must exist.",
    )

    def gates(self) -> EnvironmentGates:
        """This block's gates."""
        return EnvironmentGates.model_validate(self.model_dump(include=set(EnvironmentGates.model_fields)))

    @classmethod
    def gates_for(cls, app: str, environments: Sequence[str]) -> DeliveryGates:
        """The gates a delivery of ``app`` to ``environments`` is held to: the ci block's and theirs.

        Raises:
            ConfigError: if one of those environments has no block.
        """
        blocks = {env: cls.for_env(env).gates() for env in gated_environments(environments)}
        return delivery_gates(app, blocks)

    def job_resources(self, env: str) -> JobResources:
        """The memory and CPUs of this environment's job containers, and where an operator raises them."""
        return JobResources(
            memory=self.job_memory,
            cpus=self.job_cpus,
            where=f"job_memory of the shipline-environment block {env!r}",
        )

    @property
    def job_user(self) -> JobUser:
        """The user and group of this environment's job containers."""
        return JobUser(uid=self.job_uid, gid=self.job_gid)

    def job_conditions(self, env: str) -> str:
        """How this environment's build and unit-test containers run, and the block fields that say so."""
        return (
            f"the job ran as {self.job_user} (job_uid, job_gid), with a read-only root filesystem "
            f"(writable: /workspace and /tmp) and network {self.job_network} (job_network), as the "
            f"shipline-environment block {env!r} sets them"
        )

    @field_validator("allowed_capabilities")
    @classmethod
    def _capabilities(cls, value: list[str]) -> list[str]:
        return capability_names(value)

    @field_validator("host_mounts")
    @classmethod
    def _never_the_host_itself(cls, value: list[HostMount]) -> list[HostMount]:
        from shipline.config import load_settings

        if refused := refused_entries(value, load_settings().home):
            raise ValueError("; ".join(refused))
        return value

    @field_validator("requires_passed")
    @classmethod
    def _environment_names(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            validate_name(name, what="environment")
        return value

    @model_validator(mode="after")
    def _range_ordered(self) -> ShiplineEnvironment:
        if self.port_range_end < self.port_range_start:
            raise ValueError("port_range_end must not be below port_range_start")
        return self

    def instance_url(self, port: int) -> str:
        """Where an instance on ``port`` of this environment's host answers directly, not through nginx."""
        return f"http://{self.advertise_ip}:{port}"

    @classmethod
    def for_env(cls, env: str) -> ShiplineEnvironment:
        """The saved document of environment ``env``.

        Raises:
            ConfigError: if no such environment is configured.
        """
        return load_document(
            cls,
            env,
            what=f"no environment {env!r}",
            hint="shipline up creates ci, pre and prod; create others in the Prefect UI (Blocks)",
        )
