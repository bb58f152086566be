"""The ``shipline`` command line.

Every command reports a ``ShiplineError`` as one line (plus a ``hint:`` line) and exits non-zero;
no traceback reaches the user.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from shipline.config import Settings, load_settings
from shipline.errors import ConfigError, ServiceUnavailableError, ShiplineError, SpecError

if TYPE_CHECKING:
    from shipline.build.gates import EnvironmentGates
    from shipline.discovery.splits import Decision
    from shipline.logs.store import LogStore
    from shipline.onboarding import Onboarded

app = typer.Typer(
    name="shipline",
    help="Continuous delivery for Docker services: from a commit to PROD, findable in etcd, served by nginx.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
ProfileOption = Annotated[
    str | None,
    typer.Option(
        "--profile",
        help="The stack's profile: default (one host), or scale (PRE and PROD on Docker engines of their "
        "own, its own home and ports). Default: SHIPLINE_PROFILE, else default.",
    ),
]


def _fail(message: str, hint: str | None = None, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    if hint:
        typer.echo(f"hint: {hint}", err=True)
    raise typer.Exit(code)


def reports_errors(command: F) -> F:
    """Turn a ShiplineError into a one-line message and exit code 1."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ShiplineError as exc:
            _fail(exc.message, exc.hint)
        except KeyboardInterrupt:
            _fail("interrupted", code=130)

    return wrapper  # type: ignore[return-value]


def settings(profile: str | None = None) -> Settings:
    """Settings for this invocation; Prefect calls in this process go to the stack's server by default.

    Args:
        profile: ``--profile``: its defaults apply here and in every process this one starts.
    """
    loaded = load_settings(profile)
    os.environ["SHIPLINE_PROFILE"] = loaded.profile
    for key, value in loaded.prefect_environment().items():
        os.environ.setdefault(key, value)
    return loaded


PROFILE_COMMANDS = {"up", "down", "status"}
"""Commands with ``--profile``: they read their settings themselves, before anything imports Prefect."""


@app.callback()
@reports_errors
def _stack_settings(context: typer.Context) -> None:
    # Prefect reads its settings once, when first imported: give it the stack's (the profile's home, API
    # URL and credential) before any command imports a module that imports Prefect.
    if context.invoked_subcommand not in PROFILE_COMMANDS:
        settings()


@app.command()
@reports_errors
def up(profile: ProfileOption = None) -> None:
    """Start the embedded local stack (only what is not running) and print every URL."""
    from shipline.stack.lifecycle import up as stack_up

    current = settings(profile)
    began = time.monotonic()
    typer.echo(f"Shipline stack (home {current.home}, profile {current.profile})")
    result = stack_up(current)
    elapsed = time.monotonic() - began
    if result.started:
        typer.echo(f"Started {', '.join(result.started)} in {elapsed:.1f}s.")
    elif result.provisioned:
        typer.echo(f"Everything was already running; re-applied Prefect provisioning ({elapsed:.1f}s).")
    else:
        typer.echo(f"Everything was already running; nothing changed ({elapsed:.1f}s).")
    _print_urls(current)


def _print_urls(current: Settings) -> None:
    typer.echo("")
    typer.echo(f"  Prefect UI        {current.prefect_url}")
    login = f"the value of PREFECT_API_AUTH_STRING in {current.prefect_client_credentials}"
    typer.echo(f"  Prefect login     {login}")
    typer.echo(f"  Prefect API       {current.prefect_api_url}")
    typer.echo(f"  etcd              {current.etcd_url}")
    typer.echo(f"  registry          http://{current.registry_address}/v2/")
    from shipline.discovery.routes import running_mode

    routing = {
        "dynamic": "dynamic routing: members from etcd in a Lua table, no reloads",
        "template": "template routing: a file per app, nginx -t, reload",
    }[running_mode(current)]
    typer.echo(f"  nginx             {current.nginx_url}  (apps: {current.app_url('APP', 'ENV')}; {routing})")
    typer.echo(f"  GitLab webhook    {current.webhook_url}")
    typer.echo(f"  log search        {current.logs_page_url}  (shipline logs search QUERY)")
    typer.echo(f"  Docker Engine     {current.docker_url}")
    for env, host in current.environment_hosts.items():
        typer.echo(f"  {env + ' host':<17} {current.engine_url(host.engine)}  (instances at {host.ip})")
    typer.echo(f"  logs              {current.log_dir}")


@app.command()
@reports_errors
def down(profile: ProfileOption = None) -> None:
    """Stop exactly what `shipline up` started (by pid), keeping all data."""
    from shipline.stack.lifecycle import down as stack_down

    stopped = stack_down(settings(profile))
    typer.echo(f"Stopped {', '.join(stopped)}." if stopped else "Nothing that Shipline started is running.")


@app.command()
@reports_errors
def status(profile: ProfileOption = None, as_json: JsonOption = False) -> None:
    """Report each component of the local stack: up or down, its URL, and whether Shipline started it.

    With hosts of their own (the scale profile), components are listed per host.
    """
    from shipline.stack.lifecycle import State
    from shipline.stack.lifecycle import status as stack_status

    current = settings(profile)
    components = stack_status(current)
    all_up = all(c.state is State.UP for c in components)
    if as_json:
        document = {
            "home": str(current.home),
            "profile": current.profile,
            "all_up": all_up,
            "components": {c.name: c.as_dict() for c in components},
        }
        typer.echo(json.dumps(document, indent=2))
        return
    hosts = [c.host for c in components]
    for host in sorted(set(hosts), key=hosts.index) if current.environment_hosts else [None]:
        if host is not None:
            address = current.engines.get(host, current.host)
            envs = ", ".join(current.engine_environments("" if host == "main" else host)) or "-"
            typer.echo(f"host {host} ({address}; environments: {envs})")
        for c in components:
            if host is not None and c.host != host:
                continue
            owner = f"pid {c.pid}" if c.managed else ("external" if c.state == State.UP else "")
            if c.restarts:
                owner += f", {c.restarts} restart(s), last: {c.last_exit}"
            indent, width = ("  ", 16) if host is not None else ("", 12)
            width = max(width, *(len(other.name) for other in components))
            typer.echo(f"{indent}{c.name:<{width}} {c.state:<9} {c.url:<48} {owner}")


@app.command()
@reports_errors
def doctor(as_json: JsonOption = False) -> None:
    """Check prerequisites (programs, versions, ports, permissions); exit 1 if any check fails."""
    from shipline.stack.doctor import run_checks

    checks = run_checks(settings())
    if as_json:
        typer.echo(json.dumps([c.as_dict() for c in checks], indent=2))
    else:
        for check in checks:
            mark = "ok  " if check.ok else "FAIL"
            fix = f"  -> fix: {check.fix}" if not check.ok and check.fix else ""
            typer.echo(f"{mark} {check.name:<14} {check.detail}{fix}")
    if not all(check.ok for check in checks):
        raise typer.Exit(1)


@app.command()
@reports_errors
def releases(
    app_name: Annotated[str, typer.Argument(metavar="APP", help="The app.")],
    env: Annotated[str, typer.Option("--env", help="The environment (ci, pre, prod).")],
    stats: Annotated[bool, typer.Option("--stats", help="DORA figures instead of the list.")] = False,
    days: Annotated[float, typer.Option("--days", min=0.01, help="Window of --stats, in days.")] = 30.0,
    as_json: JsonOption = False,
) -> None:
    """Release history of an app in an environment, oldest first, or its DORA figures (--stats)."""
    from datetime import UTC, datetime, timedelta

    from shipline.release.dora import dora_metrics
    from shipline.release.lifecycle import release_as_shown, release_history

    history = release_history(app_name, env, etcd_url=settings().etcd_url)
    if stats:
        metrics = dora_metrics(history, now=datetime.now(UTC), window=timedelta(days=days))
        if as_json:
            typer.echo(metrics.model_dump_json(indent=2))
            return
        for name, value in metrics.model_dump().items():
            shown = "n/a" if value is None else (f"{value:.3g}" if isinstance(value, float) else value)
            typer.echo(f"{name:<24} {shown}")
        return
    if as_json:
        typer.echo(json.dumps([release_as_shown(release) for release in history], indent=2))
        return
    if not history:
        typer.echo(f"{app_name} has no release in {env}.")
        return
    for release in history:
        when = release.created.strftime("%Y-%m-%d %H:%M:%S")
        typer.echo(
            f"#{release.number:<4} {release.status:<12} {when}  {release.sha[:12]}  {release.digest[:19]}"
        )
        if release.approval:
            typer.echo(f"      {release.approval}")
        if release.canary:
            typer.echo(f"      {release.canary}")


@app.command()
@reports_errors
def rollback(
    app_name: Annotated[str, typer.Argument(metavar="APP", help="The app.")],
    env: Annotated[str, typer.Option("--env", help="The environment (pre, prod).")],
    to: Annotated[
        int | None, typer.Option("--to", help="Release number (default: the last good one).")
    ] = None,
) -> None:
    """Redeploy a previous release (the same image digest) as a new release, and wait for it."""
    from shipline.release.lifecycle import release_history, replay_request, rollback_target, run_release

    target = rollback_target(release_history(app_name, env, etcd_url=settings().etcd_url), to=to)
    typer.echo(f"Rolling {app_name} in {env} back to release {target.number} ({target.digest}) ...")
    release = run_release(replay_request(target), timeout=1800)
    typer.echo(
        f"{app_name} in {env} runs release {target.number}'s digest again, as release {release.number}."
    )


@app.command()
@reports_errors
def retire(
    app_name: Annotated[str, typer.Argument(metavar="APP", help="The app.")],
    env: Annotated[str, typer.Option("--env", help="The environment (pre, prod).")],
    grace: Annotated[
        int, typer.Option("--grace", min=0, max=600, help="Seconds each instance gets to stop.")
    ] = 10,
    as_json: JsonOption = False,
) -> None:
    """Take an app out of an environment: keys, nginx file, instances, port reservations, deploy limit.

    The release history stays (with a `retired` entry); `shipline rollback` or a new delivery brings the
    app back.
    """
    from prefect.concurrency.sync import concurrency

    from blocks.environment import ShiplineEnvironment
    from shipline.docker import docker_client
    from shipline.names import validate_name
    from shipline.release.lifecycle import deploy_limit_exists, deploy_limit_name, remove_deploy_limit
    from shipline.release.retire import retire as retire_app

    validate_name(app_name, what="app name")
    validate_name(env, what="environment")
    current = settings()
    environment = ShiplineEnvironment.for_env(env)
    client = docker_client(environment.docker_host)

    def take_out() -> Any:
        return retire_app(app_name, env, etcd_url=current.etcd_url, client=client, grace_seconds=grace)

    if deploy_limit_exists(app_name, env):  # no deploy of the app may run meanwhile: hold its deploy lock
        with concurrency(deploy_limit_name(app_name, env), occupy=1, strict=True, timeout_seconds=600):
            done = take_out()
    else:  # no deploy of it ever ran through a release flow
        done = take_out()
    done.limit_removed = remove_deploy_limit(app_name, env)
    if as_json:
        typer.echo(done.model_dump_json(indent=2))
        return
    typer.echo(
        f"Retired {app_name} from {env}: {len(done.instances)} instance(s) stopped, {len(done.keys)} key(s) "
        f"and {len(done.ports)} port reservation(s) removed, its nginx route removed by discover; "
        f"history kept (entry #{done.entry} 'retired')."
    )


@app.command()
@reports_errors
def run(
    source: Annotated[
        str, typer.Argument(help="Git URL, git repository, or a directory holding shipline.yaml.")
    ],
    ref: Annotated[str | None, typer.Option("--ref", help="Branch, tag or sha (default: HEAD).")] = None,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", help="Release to these environments in order (default: pre, prod)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Deliver a repository through the pipeline (delivery/delivery); exit 0 only if every stage succeeded."""
    current = settings()  # before Prefect is imported: it reads its settings (the stack's) once, then

    from shipline.build.sources import resolve_source
    from shipline.delivery import follow_delivery

    local = Path(source).expanduser()
    if local.is_dir() and (local / "shipline.yaml").is_file():
        from shipline.build.check import check_repository

        # A bad spec is reported here at once, not after a round trip through the workers; so is one the
        # operators' gates refuse, when their blocks can be read (else the stages say it).
        blocks, _ = _environment_gates(env or ["pre", "prod"])
        checked = check_repository(local.resolve(), blocks)
        if not checked.ok:
            raise SpecError(
                f"{local / 'shipline.yaml'} has {len(checked.problems)} problem(s):\n  "
                + "\n  ".join(checked.problems),
                hint=f"shipline check {source}",
            )
    location = resolve_source(source, sources_dir=current.home / "sources")
    report = follow_delivery(location, ref=ref, environments=env, quiet=as_json, echo=typer.echo)
    if as_json:
        typer.echo(json.dumps(report.model_dump(mode="json"), indent=2))
    else:
        typer.echo(f"{report.state}: {current.prefect_url}/runs/flow-run/{report.flow_run_id}")
        if report.summary is not None:
            typer.echo(f"  image {report.summary.image}@{report.summary.digest}")
            for name, number in report.summary.releases.items():
                typer.echo(f"  {name}: release {number}")
    if report.state != "Completed":
        raise typer.Exit(1)


def _environment_gates(environments: list[str]) -> tuple[dict[str, EnvironmentGates] | None, str | None]:
    """The gates of the blocks a delivery to ``environments`` meets, or why they could not be read."""
    from shipline.build.check import read_environment_gates
    from shipline.build.gates import gated_environments

    try:
        return read_environment_gates(settings().prefect_api_url, environments), None
    except (ServiceUnavailableError, ConfigError) as exc:
        names = ", ".join(gated_environments(environments))
        return None, (
            f"the operators' gates (shipline-environment blocks {names}) were not checked: {exc.message}; "
            "the delivery's unit-test and scan stages check them"
        )


@app.command()
@reports_errors
def check(
    directory: Annotated[Path, typer.Argument(help="The app's repository (default: here).")] = Path("."),
    env: Annotated[
        list[str] | None,
        typer.Option("--env", help="Check the gates of these environments' blocks too (default: pre, prod)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check shipline.yaml locally, as a delivery's spec stage would, and against the gates of the ci
    block and the environments' blocks when Prefect answers; list every problem, exit 1 if any."""
    from shipline.build.check import check_repository

    blocks, unread = _environment_gates(env or ["pre", "prod"])
    result = check_repository(directory.resolve(), blocks)
    if unread:
        result.notes.append(unread)
    if as_json:
        typer.echo(json.dumps(result.model_dump(mode="json") | {"ok": result.ok}, indent=2))
    elif result.ok:
        typer.echo(f"ok: {result.app} ({directory / 'shipline.yaml'})")
    else:
        typer.echo(f"{len(result.problems)} problem(s) in {directory / 'shipline.yaml'}:", err=True)
        for problem in result.problems:
            typer.echo(f"  {problem}", err=True)
    if not as_json:
        for note in result.notes:
            typer.echo(f"note: {note}", err=True)
    if not result.ok:
        raise typer.Exit(1)


@app.command()
@reports_errors
def services(
    app_name: Annotated[str | None, typer.Argument(metavar="[APP]", help="Only this app.")] = None,
    env: Annotated[str | None, typer.Option("--env", help="Only this environment.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Instances registered in etcd (/{APP}_{ENV}/{IP}-{PORT})."""
    from shipline.discovery.instances import Instance, list_instances
    from shipline.etcd_client import connect

    async def read() -> list[Instance]:
        async with connect(settings().etcd_url) as client:
            return await list_instances(client, app=app_name, env=env)

    found = asyncio.run(read())
    if as_json:
        typer.echo(json.dumps([{**i.model_dump(), "key": i.key} for i in found], indent=2))
        return
    if not found:
        typer.echo("No instance is registered" + (f" for {app_name}" if app_name else "") + ".")
    for instance in found:
        typer.echo(f"{instance.app:<24} {instance.env:<6} {instance.address:<22} {instance.key}")


@app.command()
@reports_errors
def discover() -> None:
    """The discovery daemon: render nginx from the instances in etcd, until SIGTERM or Ctrl-C."""
    from shipline.discovery.discover import Discovery, serve_status

    current = settings()

    async def main(stop: asyncio.Event) -> None:
        discovery = Discovery(current)
        server = await serve_status(discovery, current.edge_host, current.discover_port)
        writes = (
            f"nginx's routing table at {current.nginx_admin_socket} (dynamic mode: no reloads)"
            if discovery.mode == "dynamic"
            else f"{current.nginx_conf_dir} (template mode: nginx -t, then reload)"
        )
        typer.echo(
            f"discover: watching {current.etcd_url}, writing {writes}, "
            f"metrics on {current.discover_url}/metrics"
        )
        async with server:
            await discovery.run(stop)
        if discovery.mode_changed:
            raise typer.Exit(3)  # its supervisor starts it again, in nginx's new mode

    _run_daemon(main)


@app.command()
@reports_errors
def registrator(
    env: Annotated[
        list[str] | None, typer.Option("--env", help="Only these environments (default: all).")
    ] = None,
    ip: Annotated[
        str | None, typer.Option("--ip", help="Address instances are reached at (default: host).")
    ] = None,
    ttl: Annotated[int, typer.Option("--ttl", min=2, help="Lease TTL in seconds.")] = 10,
    docker_host: Annotated[
        str | None,
        typer.Option("--docker-host", help="The host's Docker Engine (default: the stack's, docker_socket)."),
    ] = None,
) -> None:
    """The registration daemon: this Docker host's Shipline containers in etcd, until SIGTERM or Ctrl-C."""
    from shipline.discovery.registrator import Registrator

    current = settings()
    engine = docker_host or current.docker_url
    daemon = Registrator(
        docker_url=engine,
        etcd_url=current.etcd_url,
        ip=_loopback_or_fail(ip or current.host),
        envs=env,
        ttl=ttl,
    )

    async def main(stop: asyncio.Event) -> None:
        typer.echo(f"registrator: {engine} -> {current.etcd_url} as {daemon.ip}, lease TTL {ttl}s")
        await daemon.run(stop)

    _run_daemon(main)


def _loopback_or_fail(address: str) -> str:
    import ipaddress

    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise ConfigError(f"--ip {address!r} is not an IP address", hint="give the host's address") from None
    return address


@app.command()
@reports_errors
def web() -> None:
    """The web service: GitLab webhooks on POST /hooks/gitlab, until SIGTERM or Ctrl-C."""
    from shipline.web.service import serve

    current = settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per event is ours; not one per call
    typer.echo(f"web: GitLab webhooks on {current.webhook_url}")
    asyncio.run(serve(current))


def _run_daemon(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run a daemon's ``main(stop)`` with logging to stderr; SIGTERM or Ctrl-C sets ``stop``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per call would drown the daemon's own

    async def supervised() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(supervised())


@app.command()
@reports_errors
def units(
    role: Annotated[
        list[str] | None, typer.Option("--role", help="ci, pre, prod, edge or server (default: all of them).")
    ] = None,
    out: Annotated[str, typer.Option("--out", help="Directory to write the unit files into.")] = "units",
) -> None:
    """Write systemd units (Restart=always) for the daemons of a host's role, for production hosts."""
    from pathlib import Path

    from shipline.stack.units import ROLES, write_units

    chosen = role or list(ROLES)
    unknown = sorted(set(chosen) - set(ROLES))
    if unknown:
        _fail(f"unknown role(s) {', '.join(unknown)}", hint=f"choose from {', '.join(ROLES)}")
    written = write_units(Path(out), chosen, settings())  # type: ignore[arg-type]
    for path in written:
        typer.echo(str(path))
    typer.echo(
        f"Install: cp {out}/*.service /etc/systemd/system/; systemctl daemon-reload; systemctl enable --now"
    )
    typer.echo(
        f"The daemons read etcd's credentials from {settings().etcd_credentials_path}: copy that file "
        "(mode 0600) to the same place on each host"
    )


@app.command()
@reports_errors
def housekeeping(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Remove nothing; print what would be removed.")
    ] = False,
    app_name: Annotated[
        list[str] | None,
        typer.Option("--app", help="Only these apps' images (files are swept all the same)."),
    ] = None,
    show_kept: Annotated[bool, typer.Option("--kept", help="List what is kept too, and why.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Remove old workspaces, release directories and unneeded app images here, as the nightly run does.

    The shipline-housekeeping/default block says what is kept (--dry-run overrides its dry_run); the space
    of deleted images is reclaimed when the registry is this host's stack registry. Exit 1 if anything
    failed.
    """
    from blocks.housekeeping import ShiplineHousekeeping
    from blocks.registry import ShiplineRegistry
    from shipline.housekeeping.report import Action, failures, summary
    from shipline.housekeeping.sweep import housekeep

    current = settings()
    policy = ShiplineHousekeeping.current().policy()
    if dry_run:
        policy = policy.model_copy(update={"dry_run": True})
    registry = ShiplineRegistry.current().registry()
    items = housekeep(current, policy, registry, apps=app_name, log=_progress(as_json))
    if as_json:
        document = {"policy": policy.model_dump(), "items": [item.model_dump(mode="json") for item in items]}
        typer.echo(json.dumps(document, indent=2))
    else:
        for item in items:
            if item.action is not Action.KEPT or show_kept:
                action, kind = item.action.value, item.kind.value
                typer.echo(f"{action:<26} {kind:<11} {item.size:>10}  {item.name}  ({item.reason})")
        typer.echo(summary(items, dry_run=policy.dry_run))
    if failures(items):
        raise typer.Exit(1)


registry_commands = typer.Typer(help="The stack's registry: reclaiming the space of deleted images.")
app.add_typer(registry_commands, name="registry")


@registry_commands.command("gc")
@reports_errors
def registry_gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be freed.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Free the blobs no image references (garbage-collect), the registry read-only meanwhile.

    Only the registry this host's `shipline up` started; pushes are refused (and retried by deliveries)
    while it runs, pulls are served.
    """
    from shipline.sizes import human_bytes
    from shipline.stack.registry_maintenance import collect_blob_space

    done = collect_blob_space(
        settings(), dry_run=dry_run, report=lambda line: None if as_json else typer.echo(line)
    )
    if as_json:
        typer.echo(json.dumps({**done.model_dump(), "freed": done.freed}, indent=2))
        return
    verb = "would go" if dry_run else "deleted"
    typer.echo(
        f"registry {done.registry}: {done.blobs_deleted} unreferenced blob(s) {verb}, "
        f"{human_bytes(done.freed)} freed; pushes waited {done.read_only_seconds:.1f}s."
    )


def _progress(as_json: bool) -> Callable[[str], None]:
    """Where progress lines go: stdout, or stderr when stdout carries JSON."""
    return lambda line: typer.echo(line, err=as_json)


apps = typer.Typer(help="Onboarded apps: which repository, GitLab project and branch each is delivered from.")
app.add_typer(apps, name="apps")


def _onboard(
    repository: str, branch: str, project: str | None, *, transfer_from: str | None = None
) -> Onboarded:
    """``shipline.onboarding.onboard`` with the stack's settings and the GitLab block, if one is set."""
    from blocks.gitlab import ShiplineGitLab
    from shipline.onboarding import onboard

    current = settings()
    gitlab = ShiplineGitLab.configured()
    return onboard(
        repository,
        branch=branch,
        project=project,
        etcd_url=current.etcd_url,
        gitlab=gitlab.project(project) if gitlab is not None and project is not None else None,
        webhook_url=current.webhook_url,
        webhook_secret=gitlab.webhook_secret if gitlab is not None else None,
        token=gitlab.token_for(repository) if gitlab is not None else None,
        transfer_from=transfer_from,
    )


@apps.command("add")
@reports_errors
def apps_add(
    repository: Annotated[
        str, typer.Argument(metavar="REPO_URL", help="Clone URL or path of the app's repository.")
    ],
    branch: Annotated[str, typer.Option("--branch", help="A push to this branch delivers the app.")] = "main",
    project: Annotated[
        str | None,
        typer.Option("--project", help="GitLab project (group/name): its pushes start deliveries."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Onboard an app: its name from its shipline.yaml; with a GitLab block, the project's webhook too."""
    done = _onboard(repository, branch, project)
    if as_json:
        typer.echo(done.model_dump_json(indent=2))
        return
    where = f" (GitLab {project})" if project else ""
    typer.echo(f"Onboarded {done.app.app} from {repository}{where}, branch {branch}; webhook {done.webhook}.")


@apps.command("transfer")
@reports_errors
def apps_transfer(
    repository: Annotated[
        str, typer.Argument(metavar="REPO_URL", help="Clone URL or path of the repository the app moves to.")
    ],
    branch: Annotated[str, typer.Option("--branch", help="A push to this branch delivers the app.")] = "main",
    project: Annotated[
        str | None,
        typer.Option("--project", help="GitLab project (group/name): its pushes start deliveries."),
    ] = None,
) -> None:
    """Move the app its shipline.yaml names to this repository: only this one ships it from now on."""
    import getpass

    done = _onboard(repository, branch, project, transfer_from=f"{getpass.getuser()} (OS user)")
    typer.echo(f"{done.app.app} now belongs to {repository}; deliveries from anywhere else are refused.")


@apps.command("list")
@reports_errors
def apps_list(as_json: JsonOption = False) -> None:
    """Every onboarded app."""
    from shipline.onboarding import onboarded_apps

    found = onboarded_apps(etcd_url=settings().etcd_url)
    if as_json:
        typer.echo(json.dumps([a.model_dump() for a in found], indent=2))
        return
    if not found:
        typer.echo("No app is onboarded: shipline apps add REPO_URL")
    for a in found:
        typer.echo(
            f"{a.app:<24} {a.branch:<12} {a.project or '-':<28} {a.repository}  (bound by {a.bound_by})"
        )


@apps.command("remove")
@reports_errors
def apps_remove(app_name: Annotated[str, typer.Argument(metavar="APP", help="The app.")]) -> None:
    """Forget an onboarded app (its releases and running instances stay)."""
    from shipline.onboarding import offboard

    offboard(app_name, etcd_url=settings().etcd_url)
    typer.echo(f"{app_name} is no longer onboarded; its pushes start nothing.")


RunArgument = Annotated[
    str, typer.Argument(metavar="RUN", help="Flow run id or name (as in the Prefect UI).")
]
CommentOption = Annotated[str, typer.Option("--comment", "-m", help="Why; recorded with the decision.")]


def _answer(run: str, approve: bool, comment: str) -> None:
    settings()
    from shipline.release.approval import answer_gate

    run_id = answer_gate(run, approve=approve, comment=comment)
    typer.echo(f"{'Approved' if approve else 'Rejected'} flow run {run_id}.")


def _decide_canary(app_name: str, env: str, decision: Decision) -> None:
    import getpass

    from shipline.discovery.splits import decide_split
    from shipline.etcd_client import connect

    async def decide() -> int:
        async with connect(settings().etcd_url) as client:
            by = f"{getpass.getuser()} (OS user, unverified)"
            split = await decide_split(
                client, app_name, env, "promote" if decision == "promote" else "abort", by
            )
            return split.release

    release = asyncio.run(decide())
    verb = "promotes" if decision == "promote" else "aborts"
    typer.echo(
        f"The release flow {verb} the canary of {app_name} in {env} (release {release}) within a second: "
        f"shipline releases {app_name} --env {env} shows the outcome."
    )


@app.command()
@reports_errors
def promote(
    app_name: Annotated[str, typer.Argument(metavar="APP", help="The app.")],
    env: Annotated[str, typer.Option("--env", help="The environment of its running canary.")],
) -> None:
    """End a running canary early by promoting it: the new release takes all the traffic."""
    _decide_canary(app_name, env, "promote")


@app.command()
@reports_errors
def abort(
    app_name: Annotated[str, typer.Argument(metavar="APP", help="The app.")],
    env: Annotated[str, typer.Option("--env", help="The environment of its running canary.")],
) -> None:
    """End a running canary early by aborting it: its instances go, the live release serves on."""
    _decide_canary(app_name, env, "abort")


@app.command()
@reports_errors
def approve(run: RunArgument, comment: CommentOption = "") -> None:
    """Approve a release waiting at its approval gate (the same as the form in the UI)."""
    _answer(run, True, comment)


@app.command()
@reports_errors
def reject(run: RunArgument, comment: CommentOption = "") -> None:
    """Reject a release waiting at its approval gate; the release does not go ahead."""
    _answer(run, False, comment)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except ShiplineError as exc:  # raised outside a command, e.g. while reading settings
        typer.echo(f"error: {exc.message}", err=True)
        sys.exit(1)


logs = typer.Typer(help="Container logs: the collecting agent, search and live tail.")
app.add_typer(logs, name="logs")


@logs.command("agent")
@reports_errors
def logs_agent(
    poll: Annotated[
        float, typer.Option("--poll", min=0.01, max=5, help="Pause when nothing is new (s).")
    ] = 0.1,
    docker_host: Annotated[
        str | None,
        typer.Option("--docker-host", help="The host's Docker Engine (default: the stack's, docker_socket)."),
    ] = None,
    host_name: Annotated[
        str | None,
        typer.Option(
            "--host-name", help="The host's name in the records' host tag (default: this machine's)."
        ),
    ] = None,
) -> None:
    """The collecting daemon: every Shipline container's json-file log into the log store, until SIGTERM."""
    from shipline.logs.agent import Agent, DockerContainers

    current = settings()
    engine = docker_host or current.docker_url
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    where = current.postgres_url if current.log_store == "postgresql" else current.log_store_dir / "logs.db"
    typer.echo(f"logs agent: {engine} -> {current.log_store} store {where}")
    store = _open_log_store_until_it_answers(current, stop)
    if store is None:
        return
    with store:
        Agent(store, DockerContainers(engine, host=host_name), poll_seconds=poll).run(stop)


def _open_log_store_until_it_answers(current: Settings, stop: threading.Event) -> LogStore | None:
    from shipline.logs.store import LogStoreError
    from shipline.logs.stores import open_store

    while not stop.is_set():
        try:
            return open_store(current)
        except LogStoreError as exc:
            logging.getLogger("shipline.logs.agent").warning("%s; trying again", exc.message)
            stop.wait(1.0)
    return None


def _print_record(hit: Any, words: list[str], color: bool) -> None:
    from shipline.logs.query import highlight

    record = hit.record
    tags = record.tags
    when = record.time.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    port = f":{tags.port}" if tags.port else ""
    head = f"{when} {tags.app}/{tags.env}{port} #{tags.release} {record.stream:<6}"
    if color:
        head = typer.style(head, fg="cyan")
        text = "".join(
            typer.style(piece, fg="yellow", bold=True) if matched else piece
            for piece, matched in highlight(record.message, words)
        )
    else:
        text = record.message
    flags = f" [{','.join(sorted(record.flags))}]" if record.flags else ""
    typer.echo(f"{head} {text}{flags}", color=color)


ColorOption = Annotated[
    bool | None, typer.Option("--color/--no-color", help="Highlight matches (default: on a terminal).")
]


@logs.command("search")
@reports_errors
def logs_search(
    query: Annotated[
        str,
        typer.Argument(
            help='Words and "exact phrases" (any substring, any case); AND, OR, NOT or -word, parentheses.'
        ),
    ],
    app_name: Annotated[str | None, typer.Option("--app", help="Only this app.")] = None,
    env: Annotated[str | None, typer.Option("--env", help="Only this environment.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="From: a duration back (15m, 1h, 2d) or a time (ISO 8601).")
    ] = None,
    until: Annotated[str | None, typer.Option("--until", help="To: a duration back or a time.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="At most this many lines.")] = 100,
    count: Annotated[bool, typer.Option("--count", help="Print only how many lines match.")] = False,
    color: ColorOption = None,
    as_json: JsonOption = False,
) -> None:
    """Search collected logs, newest first."""
    from shipline.logs.query import parse, positive_terms
    from shipline.logs.store import SearchRequest, parse_moment
    from shipline.logs.stores import open_store

    tree = parse(query)
    request = SearchRequest(
        tree,
        app=app_name,
        env=env,
        since=parse_moment(since) if since else None,
        until=parse_moment(until) if until else None,
        limit=limit,
    )
    if request.since and request.until and request.since > request.until:
        _fail("--since is later than --until", hint="swap them")
    with open_store(settings(), busy_seconds=10.0) as store:
        hits = store.search(request)
    if count:
        typer.echo(str(len(hits)))
        return
    if as_json:
        typer.echo(json.dumps([hit.as_json() for hit in hits], ensure_ascii=False, indent=2))
        return
    words = positive_terms(tree)
    use_color = sys.stdout.isatty() if color is None else color
    for hit in hits:
        _print_record(hit, words, use_color)
    more = " (the limit; narrow the search or raise --limit)" if len(hits) == limit else ""
    typer.echo(f"{len(hits)} line(s){more}", err=True)


@logs.command("tail")
@reports_errors
def logs_tail(
    app_name: Annotated[str, typer.Argument(metavar="APP", help="The app.")],
    env: Annotated[str, typer.Option("--env", help="The environment (ci, pre, prod).")],
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, max=10_000, help="Lines shown first.")] = 10,
    follow: Annotated[bool, typer.Option("--follow/--no-follow", help="Keep printing new lines.")] = True,
    as_json: JsonOption = False,
) -> None:
    """Every instance's log of an app in an environment, as it is collected (like `docker logs -f`)."""
    from shipline.logs.store import LogStoreError
    from shipline.logs.stores import open_store

    current = settings()
    with open_store(current, busy_seconds=10.0) as store:
        last = store.last_seq()
        backlog = (
            store.after(max(0, last - 50_000), app=app_name, env=env, limit=100_000)[-lines:] if lines else []
        )
        for hit in backlog:
            _emit_tail(hit, as_json)
        last = max([last, *(hit.seq for hit in backlog)])
        while follow:
            try:
                fresh = store.after(last, app=app_name, env=env, limit=1000)
            except LogStoreError as exc:  # the store restarts: keep following
                typer.echo(f"waiting for the log store: {exc.message}", err=True)
                time.sleep(1.0)
                continue
            for hit in fresh:
                _emit_tail(hit, as_json)
            if fresh:
                last = fresh[-1].seq
            else:
                time.sleep(0.25)


def _emit_tail(hit: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(hit.as_json(), ensure_ascii=False))
    else:
        _print_record(hit, [], False)


@logs.command("partitions")
@reports_errors
def logs_partitions(as_json: JsonOption = False) -> None:
    """The log store's days (partitions): lines and bytes each, oldest first."""
    from shipline.logs.stores import open_store

    with open_store(settings(), busy_seconds=10.0) as store:
        found = store.partitions()
    if as_json:
        rows = [{"day": p.day.isoformat(), "lines": p.lines, "bytes": p.bytes} for p in found]
        typer.echo(json.dumps(rows, indent=2))
        return
    if not found:
        typer.echo("The log store is empty.")
    for p in found:
        typer.echo(f"{p.day.isoformat()}  {p.lines:>12,} lines  {p.bytes / 2**20:>10.1f} MiB")
