"""Flow: one image digest of an app to one environment, verified before it takes over."""

from __future__ import annotations

from prefect import flow
from prefect.concurrency.sync import concurrency

from blocks.environment import ShiplineEnvironment
from shipline.discovery.splits import TrafficSplit
from shipline.errors import CanaryAborted, ServiceUnavailableError
from shipline.release.approval import approve_release
from shipline.release.history import Release, ReleaseStatus
from shipline.release.plan import ReleaseRequest
from tasks.autotest import run_release_tests
from tasks.canary import analyse_canary, check_canary_routing, end_canary, start_canary
from tasks.compose import render_compose_file
from tasks.deploy import (
    remove_release_instances,
    retire_instances,
    start_instances,
    wait_for_health,
    wait_for_registration,
)
from tasks.notify import send_release_notice
from tasks.ports import allocate_instance_ports, free_instance_ports
from tasks.releases import (
    check_capabilities,
    check_host_mounts,
    check_road,
    check_secrets,
    close_release,
    ensure_deploy_limit,
    fail_abandoned_releases,
    open_release,
)
from tasks.traffic import clear_for_traffic, withdraw_traffic

DEPLOY_LOCK_LEASE_SECONDS = 60
"""The deploy lock's lease, renewed while the deploy runs: a deploy killed with its worker frees the lock
within this plus the Prefect server's repossessor interval (15 s). Prefect's minimum is 60."""


@flow(name="release")
def release(request: ReleaseRequest) -> Release:
    """Deploy an app's image digest to an environment and make it live, or leave the previous release serving.

    0. the road: the digest must have gone live first where the environment's block requires
       (``requires_passed``; unset, PROD requires PRE) — a refusal names the environment it has not passed;
       and the instances' host mounts must be in the environment's ``host_mounts``, the capabilities they
       ask for in its ``allowed_capabilities``; every Prefect Secret block a variable names
       (``{secret: NAME}``) must exist;
    1. approval, when the environment's block or the app's spec (``requires_approval``) asks for it
       (answer in this run's form, or `shipline approve`);
    2. a release record in etcd, one deploy at a time per app and environment (`deploy-{app}-{env}`); a
       release left `deploying` by a deploy that died (a killed worker) is failed and its instances removed;
    3. ports reserved, docker-compose.yml rendered (artifact), new instances started beside the old ones;
       secret values (Secret blocks, and plain values under secret-looking names) are never written to
       the file or the artifact: the deploy reads them and gives them to `docker compose up` directly;
    4. health, then the auto-tests against every new instance directly (artifact) — no new instance takes
       traffic yet; only when all pass is the release cleared for traffic (``/shipline/cleared/...``), and
       the registrator puts its instances in etcd, and so behind nginx; the flow waits for that;
    4b. a canary, where the spec asks for one in this environment (``canary``) and a live release serves:
       the new instances take ``weight`` % of the requests for ``seconds``; nginx's figures (5xx rate, p99)
       promote or abort it (artifact ``canary-{app}-{env}``), or an operator does (`shipline promote` /
       `shipline abort`); an aborted canary is rolled back like a failed auto-test;
    5. old instances retired (each leaves etcd, and so nginx, before it stops), the clearances of other
       releases withdrawn, release live, notified.
    A failure in 3-4 withdraws the clearance, removes the new instances and records the release as rolled
    back: whatever was live before keeps serving, untouched, and no user request met the new release (but
    for a canary's share). When the environment's Docker engine itself is gone, the release is recorded as
    failed, its ports are given back, and the next deploy removes its instances once the engine is back.

    Retried from the UI, the run is a new attempt: every task here has a side effect or reads the world
    as it is now, so none is served from a cache (``cache_policy=NO_CACHE``) — a new release record, new
    ports, new instances, the auto-tests against them.
    """
    environment = ShiplineEnvironment.for_env(request.env)
    check_road(request, environment)
    check_host_mounts(request, environment)
    check_capabilities(request, environment)
    check_secrets(request)
    approval = approve_release(request, required=request.requires_approval(environment.requires_approval))
    wanted_canary = request.settings.canary
    if wanted_canary is not None:
        check_canary_routing(request.app, request.env)
    lock = ensure_deploy_limit(request.app, request.env)
    with concurrency(lock, occupy=1, strict=True, lease_duration=DEPLOY_LOCK_LEASE_SECONDS):
        fail_abandoned_releases(request.app, request.env, environment)
        opened = open_release(request, approval.recorded() if approval is not None else None)
        ports: list[int] = []
        split: TrafficSplit | None = None
        try:
            ports = allocate_instance_ports(
                request.app, request.env, request.replicas(environment.replicas), environment
            )
            compose = render_compose_file(request, opened.number, ports, environment)
            start_instances(compose, environment)
            wait_for_health(compose, environment)
            run_release_tests(
                request.app,
                request.env,
                [environment.instance_url(p) for p in ports],
                request.auto_tests,
                image=f"{request.image}@{request.digest}",
                environment=environment,
            )
            if wanted_canary is not None:
                split = start_canary(opened, ports, environment, wanted_canary)
            clear_for_traffic(opened)
            wait_for_registration(compose, environment)
            if split is not None and wanted_canary is not None:
                verdict = analyse_canary(split, wanted_canary)
                opened = opened.model_copy(update={"canary": verdict.summary()})
                if not verdict.promoted:
                    raise CanaryAborted(f"{request.app}/{request.env}: {verdict.summary()}")
        except Exception as failure:
            withdraw_traffic(request.app, request.env, only={opened.number})
            outcome = ReleaseStatus.ROLLED_BACK
            try:
                remove_release_instances(request.app, request.env, opened.number, environment)
            except ServiceUnavailableError:
                # The host's engine is gone: the release is failed, and the next deploy removes its
                # instances there (fail_abandoned_releases). Its ports are given back all the same.
                outcome = ReleaseStatus.FAILED
            if wanted_canary is not None:
                end_canary(request.app, request.env)
            free_instance_ports(request.app, request.env, ports, environment)
            close_release(opened, outcome)
            send_release_notice(
                request.notice("failed", opened.number, str(failure)), request.notification_blocks
            )
            raise
        retire_instances(
            request.app,
            request.env,
            keep_release=opened.number,
            environment=environment,
            grace_seconds=request.service.stop_grace_seconds,
        )
        if split is not None:
            end_canary(request.app, request.env)
        withdraw_traffic(request.app, request.env, keep=opened.number)
        free_instance_ports(request.app, request.env, ports, environment)
        live = close_release(opened, ReleaseStatus.LIVE)
    send_release_notice(request.notice("success", live.number), request.notification_blocks)
    return live
