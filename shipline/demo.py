"""``make demo``: deliver the Python sample from a commit to PROD, then say where to look."""

from __future__ import annotations

import os
import sys

from shipline.config import PROJECT_ROOT, load_settings
from shipline.stack.lifecycle import State, status

SAMPLE = PROJECT_ROOT / "examples" / "hello-python"


def main() -> int:
    settings = load_settings()
    for key, value in settings.prefect_environment().items():
        os.environ.setdefault(key, value)
    from shipline.build.sources import resolve_source
    from shipline.delivery import follow_delivery
    from shipline.docker import docker_client
    from shipline.release.deploy import running_instances

    print(
        f"Delivering {SAMPLE.relative_to(PROJECT_ROOT)} from commit to PRE and PROD (the first run builds the"
    )
    print("Debian OS and python3 middleware layers, about a minute; later runs reuse them):")
    source = resolve_source(str(SAMPLE), sources_dir=settings.home / "sources")
    report = follow_delivery(source, ref=None, environments=None, quiet=False, echo=print)
    run_url = f"{settings.prefect_url}/runs/flow-run/{report.flow_run_id}"
    print(f"\n{report.state}: {run_url}")
    if report.summary is not None:
        print(f"  commit {report.summary.sha}\n  image  {report.summary.image}@{report.summary.digest}")
        for env in report.summary.releases:
            # Each environment's instances run on its host's engine, at its host's address (the scale
            # profile gives PRE and PROD their own); elsewhere on the stack's engine, at its address.
            own = settings.host_of(env)
            engine = settings.engine_url(own.engine) if own else settings.docker_url
            address = own.ip if own else settings.host
            for instance in running_instances(docker_client(engine), app=report.summary.app, env=env):
                print(
                    f"  {env:<5} release {instance.release}  http://{address}:{instance.port}/version  "
                    f"(engine {engine})"
                )
            host = f"{report.summary.app}.{env}.localhost"
            print(f"  {env:<5} through nginx: curl -H 'Host: {host}' {settings.nginx_url}/version")
    else:
        print(f"  {report.message}")

    print("\nComponents:")
    components = status(settings)
    for component in components:
        print(f"  {component.name:<16} {component.state:<6} {component.host:<5} {component.url}")
    print("\nWhere to look:")
    print(f"  Prefect UI      {settings.prefect_url}  (the delivery run above, its stages and artifacts)")
    print("  releases        .venv/bin/shipline releases hello-python --env prod [--stats]")
    print(
        f"  registry        http://{settings.registry_address}/v2/_catalog  (its login, never printed: "
        f"{settings.registry_credentials_file})"
    )
    print(f"  GitLab webhook  {settings.webhook_url}  (onboard: shipline apps add REPO --project group/app)")
    print(f"  app logs        {settings.logs_page_url}?app=hello-python  (search, live tail)")
    print("  in the shell    .venv/bin/shipline logs search 'GET /version' --app hello-python --since 1h")
    print(
        f"  etcd            (set -a; . {settings.etcd_credentials_path}; "
        f"etcdctl {' '.join(settings.etcdctl_arguments())} get --prefix /shipline/)"
    )
    print(f"  logs and state  {settings.home}")
    print(f"  stop            .venv/bin/shipline down --profile {settings.profile}")
    ok = report.state == "Completed" and all(c.state is State.UP for c in components)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
