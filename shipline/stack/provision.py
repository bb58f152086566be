"""Prefect's side of the local stack: work pools, Shipline's block types and documents, deployments.

Everything here is create-if-missing, so operators' changes in the UI (a block's port range, a paused
deployment's schedule) survive the next ``shipline up``. Deployments are re-applied when
``deployments/prefect.yaml`` changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shipline.build.registry import Registry
from shipline.config import DEPLOYMENTS_DIR, PROJECT_ROOT, UNRESPONSIVE_AFTER_SECONDS, Settings
from shipline.errors import ConfigError, ServiceUnavailableError
from shipline.files import write_atomically
from shipline.prefect_auth import prefect_auth

Report = Callable[[str], None]

PREFECT_YAML = DEPLOYMENTS_DIR / "prefect.yaml"
WORK_POOLS_YAML = DEPLOYMENTS_DIR / "work-pools.yaml"

# Local documents of Shipline's block types; created when missing, never overwritten.
ENVIRONMENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "ci": {"port_range_start": 20000, "port_range_end": 20999, "replicas": 1},
    "pre": {"port_range_start": 21000, "port_range_end": 21999, "replicas": 1},
    "prod": {"port_range_start": 22000, "port_range_end": 22999, "replicas": 2},
}


class WorkPoolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    type: str = "process"
    description: str = ""


class ScheduleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cron: str | None = None
    interval: float | None = Field(default=None, gt=0, description="seconds")
    timezone: str = "UTC"
    active: bool = True


class WorkPoolRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    job_variables: dict[str, Any] = Field(default_factory=dict)


class DeploymentSpec(BaseModel):
    """One entry of ``deployments:`` in prefect.yaml (the keys Shipline uses)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    entrypoint: str
    work_pool: WorkPoolRef
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    schedules: list[ScheduleSpec] = Field(default_factory=list)
    concurrency_limit: int | None = None

    @property
    def flow_file(self) -> Path:
        return PROJECT_ROOT / self.entrypoint.split(":", 1)[0]


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path.relative_to(PROJECT_ROOT)}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path.relative_to(PROJECT_ROOT)} must hold a mapping")
    return data


def load_work_pools() -> list[WorkPoolSpec]:
    """The work pools of deployments/work-pools.yaml."""
    try:
        return [WorkPoolSpec.model_validate(p) for p in _load_yaml(WORK_POOLS_YAML).get("work_pools", [])]
    except ValidationError as exc:
        raise ConfigError(f"deployments/work-pools.yaml: {exc}") from exc


def load_deployments() -> list[DeploymentSpec]:
    """The deployments of deployments/prefect.yaml."""
    try:
        return [DeploymentSpec.model_validate(d) for d in _load_yaml(PREFECT_YAML).get("deployments", [])]
    except ValidationError as exc:
        raise ConfigError(
            f"deployments/prefect.yaml: {exc}",
            hint="Shipline applies name, entrypoint, work_pool, description, tags, parameters, "
            "schedules (cron or interval) and concurrency_limit",
        ) from exc


def flow_name(spec: DeploymentSpec) -> str:
    """The flow name of a deployment's entrypoint, read from its ``@flow(name=...)`` without importing it."""
    import ast

    function = spec.entrypoint.split(":", 1)[1]
    tree = ast.parse(spec.flow_file.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == function:
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call):
                    for keyword in decorator.keywords:
                        if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                            return str(keyword.value.value)
            return function.replace("_", "-")
    raise ConfigError(
        f"deployments/prefect.yaml: {spec.entrypoint} names no function of {spec.flow_file.name}"
    )


def fingerprint() -> str:
    """Changes whenever what provisioning applies changes.

    That includes the flows and every model their parameters are made of (the deployments carry the
    parameters' JSON schema: a field added to the app spec must reach it, or runs that use it are refused).
    """
    digest = hashlib.sha256(str(PROJECT_ROOT).encode())
    files = (
        Path(__file__),
        PREFECT_YAML,
        WORK_POOLS_YAML,
        *sorted((PROJECT_ROOT / "blocks").glob("*.py")),
        *sorted((PROJECT_ROOT / "flows").glob("*.py")),
        *sorted((PROJECT_ROOT / "shipline").rglob("*.py")),
    )
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _marker(settings: Settings) -> Path:
    return settings.run_dir / "provisioned.json"


def _server_has_everything(
    settings: Settings, pools: list[WorkPoolSpec], specs: list[DeploymentSpec]
) -> bool:
    api = settings.prefect_api_url
    try:
        with httpx.Client(timeout=5.0, trust_env=False, auth=prefect_auth(settings)) as client:
            for pool in pools:
                if client.get(f"{api}/work_pools/{pool.name}").status_code != 200:
                    return False
            for spec in specs:
                if client.get(f"{api}/deployments/name/{flow_name(spec)}/{spec.name}").status_code != 200:
                    return False
    except httpx.HTTPError:
        return False
    return True


def up_to_date(settings: Settings) -> bool:
    """True when the last provisioning applied the current files and the server still holds their result."""
    try:
        recorded = json.loads(_marker(settings).read_text())
    except (OSError, ValueError):
        return False
    if recorded.get("fingerprint") != fingerprint() or recorded.get("registry_login") != _login_digest(
        settings
    ):
        return False
    return _server_has_everything(settings, load_work_pools(), load_deployments())


def provision(settings: Settings, report: Report = print) -> bool:
    """Create work pools, block types and documents, and deployments, unless they are up to date.

    Returns:
        True if anything was applied.

    Raises:
        ServiceUnavailableError: if the Prefect API rejects a call.
        ConfigError: if a file under deployments/ is invalid.
    """
    if up_to_date(settings):
        report("  prefect      work pools, blocks and deployments up to date")
        return False
    os.environ.update(settings.prefect_environment())
    pools, specs = load_work_pools(), load_deployments()
    try:
        _apply_work_pools(pools, report)
        _apply_blocks(settings, report)
        _apply_deployments(specs, report)
        _remove_retired_deployments(specs, report)
        _apply_automations(settings, report)
    except (httpx.HTTPError, RuntimeError) as exc:
        raise ServiceUnavailableError(
            f"prefect: provisioning at {settings.prefect_api_url} failed: {exc}",
            hint=f"read {settings.log_dir / 'prefect.log'}",
        ) from exc
    marker = {"fingerprint": fingerprint(), "registry_login": _login_digest(settings)}
    write_atomically(_marker(settings), json.dumps(marker))
    return True


def _apply_work_pools(pools: list[WorkPoolSpec], report: Report) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for pool in pools:
            template = pool_job_template(pool.type)
            try:
                existing = client.read_work_pool(pool.name)
            except ObjectNotFound:
                client.create_work_pool(
                    WorkPoolCreate(
                        name=pool.name,
                        type=pool.type,
                        description=pool.description,
                        base_job_template=template,
                    )
                )
                report(f"  prefect      created work pool {pool.name}")
                continue
            if template and existing.base_job_template != template:
                client.update_work_pool(pool.name, WorkPoolUpdate(base_job_template=template))
                report(f"  prefect      work pool {pool.name}: flow runs start from the flow starter")


def pool_job_template(pool_type: str) -> dict[str, Any]:
    """A process pool's job template, its default command the flow starter's launcher
    (``shipline.stack.flow_starter``: a run forked with Prefect and the flows already imported; it becomes
    ``python -m prefect.engine`` where the host runs no starter). Other types: Prefect's own template."""
    if pool_type != "process":
        return {}
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    template["variables"]["properties"]["command"]["default"] = (
        f"{sys.executable} -m shipline.stack.flow_starter"
    )
    return template


def _apply_blocks(settings: Settings, report: Report) -> None:
    from prefect.exceptions import ObjectNotFound

    from blocks import BLOCK_TYPES, ShiplineEnvironment, ShiplineHousekeeping, ShiplineLogs, ShiplineRegistry

    for block_type in BLOCK_TYPES:
        block_type.register_type_and_schema()
    wanted: list[tuple[str, Any]] = [
        (env, ShiplineEnvironment(work_pool=env, **values, **environment_host(settings, env)))
        for env, values in ENVIRONMENT_DEFAULTS.items()
    ]
    stack_registry = Registry.of_stack(settings)
    wanted.append(("default", ShiplineRegistry(**stack_registry.model_dump(exclude={"insecure"}))))
    wanted.append(("default", ShiplineLogs()))
    wanted.append(("default", ShiplineHousekeeping()))
    for name, document in wanted:
        try:
            saved = type(document).load(name)
        except (ValueError, ObjectNotFound):
            document.save(name)
            report(f"  prefect      saved block {document._block_type_slug}/{name}")
            continue
        if isinstance(saved, ShiplineRegistry) and _stale_login(saved, stack_registry):
            saved.username, saved.password = stack_registry.username, stack_registry.password
            saved.save(name, overwrite=True)
            report(f"  prefect      saved the stack registry's login into block shipline-registry/{name}")
    _remove_retired_blocks(report)


def environment_host(settings: Settings, env: str) -> dict[str, str]:
    """Where an environment's block points: its host's engine and address (the scale profile), else the
    stack's engine at the stack's address."""
    host = settings.host_of(env)
    if host is None:
        return {"docker_host": settings.docker_url, "advertise_ip": settings.host}
    return {"docker_host": settings.engine_url(host.engine), "advertise_ip": host.ip}


def _stale_login(saved: Any, stack_registry: Registry) -> bool:
    """True when a registry block points at the stack's registry without the login it answers now."""
    if saved.address != stack_registry.address or stack_registry.basic_auth() is None:
        return False
    password = saved.password.get_secret_value() if saved.password else None
    return (saved.username, password) != stack_registry.basic_auth()


def _login_digest(settings: Settings) -> str:
    """Changes when the stack registry's login does (a new one must reach the registry block)."""
    login = Registry.of_stack(settings).basic_auth()
    return hashlib.sha256(":".join(login).encode()).hexdigest() if login else ""


RETIRED_BLOCKS = [("shipline-etcd", "default")]
"""Documents earlier versions saved that nothing reads: etcd's address is each host's setting
(SHIPLINE_ETCD_PORT), since the daemons outside Prefect meet there. An operator editing such a block
would change nothing, so it is removed."""


def _remove_retired_blocks(report: Report) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for slug, name in RETIRED_BLOCKS:
            try:
                document = client.read_block_document_by_name(name, slug, include_secrets=False)
            except ObjectNotFound:
                continue
            client.delete_block_document(document.id)
            report(f"  prefect      removed block {slug}/{name}: nothing reads it")


RETIRED_DEPLOYMENTS = [
    "delivery/ci",
    "release/pre",
    "release/prod",
    "base-images/ci",
    "gitlab-reconcile/every-5-minutes",
    "log-maintenance/nightly",
    "stack-check/ci",
    "stack-check/pre",
    "stack-check/prod",
]
"""Deployments earlier versions applied: names that said where a run goes, not what it does, and the
stack checks that only tests need. Removed so that operators see each deployment once; their runs stay."""


def _remove_retired_deployments(specs: list[DeploymentSpec], report: Report) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    current = {f"{flow_name(spec)}/{spec.name}" for spec in specs}
    with get_client(sync_client=True) as client:
        for name in RETIRED_DEPLOYMENTS:
            if name in current:
                continue
            try:
                deployment = client.read_deployment_by_name(name)
            except ObjectNotFound:
                continue
            client.delete_deployment(deployment.id)
            report(f"  prefect      removed deployment {name}: renamed or test plumbing")


CRASH_UNRESPONSIVE_RUNS = "shipline-crash-unresponsive-runs"
UNRESPONSIVE_WEBHOOK = "shipline-unresponsive-runs"
"""The Webhook block the automation calls: ``shipline web``'s ``/hooks/prefect/unresponsive``."""


def _apply_automations(settings: Settings, report: Report) -> None:
    """Prefect's zombie-run automation: a run whose heartbeats stop (a killed worker) becomes Crashed.

    Without it a flow run whose process died stays Running in the UI for ever (PrefectHQ/prefect#16746).
    The automation asks ``shipline web`` to check and crash the run (``shipline.stack.unresponsive``) rather
    than changing its state itself, which it would also do to runs that finished (their final state can
    reach Prefect's trigger service before their last heartbeat). The automation of an earlier provisioning
    is replaced.
    """
    from prefect.blocks.webhook import Webhook
    from prefect.client.orchestration import get_client
    from prefect.events.actions import CallWebhook
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    hook = Webhook(method="POST", url=f"{settings.web_url}/hooks/prefect/unresponsive")
    block_id = hook.save(UNRESPONSIVE_WEBHOOK, overwrite=True)
    automation = AutomationCore(
        name=CRASH_UNRESPONSIVE_RUNS,
        description=f"Asks shipline web to mark a running flow run Crashed when it sends no heartbeat for "
        f"{UNRESPONSIVE_AFTER_SECONDS} s (its worker or host died); shipline web checks first that the run "
        "still runs and is still silent.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=UNRESPONSIVE_AFTER_SECONDS),
        ),
        actions=[CallWebhook(block_document_id=block_id, payload='{"flow_run": "{{ event.resource.id }}"}')],
    )
    with get_client(sync_client=True) as client:
        for existing in client.read_automations_by_name(CRASH_UNRESPONSIVE_RUNS):
            client.delete_automation(existing.id)  # provisioning runs when Shipline changed: apply anew
        client.create_automation(automation)
    report(f"  prefect      created automation {CRASH_UNRESPONSIVE_RUNS}")


def _apply_deployments(specs: list[DeploymentSpec], report: Report) -> None:
    from prefect import Flow
    from prefect.deployments.runner import RunnerDeployment
    from prefect.schedules import Cron, Interval

    for spec in specs:
        schedules = [
            Cron(s.cron, timezone=s.timezone, active=s.active)
            if s.cron
            else Interval(timedelta(seconds=s.interval or 0), timezone=s.timezone, active=s.active)
            for s in spec.schedules
        ]
        # Called from synchronous code, Prefect's dual sync/async methods return values, not coroutines.
        loaded = cast(Flow[..., Any], Flow.from_source(source=str(PROJECT_ROOT), entrypoint=spec.entrypoint))
        deployment = cast(
            RunnerDeployment,
            loaded.to_deployment(
                name=spec.name,
                work_pool_name=spec.work_pool.name,
                job_variables=spec.work_pool.job_variables or None,
                description=spec.description,
                tags=spec.tags,
                parameters=spec.parameters,
                schedules=schedules,
                concurrency_limit=spec.concurrency_limit,
            ),
        )
        deployment.apply()
        report(f"  prefect      deployment {loaded.name}/{spec.name} on pool {spec.work_pool.name}")
