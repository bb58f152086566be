"""``make demo``: show the running stack at work and print where to look.

Runs the stack-check deployment of every environment (each executed by that environment's worker),
then prints the URLs of the UI and of each component.
"""

from __future__ import annotations

import os
import sys

from shipline.config import POOLS, load_settings
from shipline.stack.lifecycle import State, status


def main() -> int:
    settings = load_settings()
    for key, value in settings.prefect_environment().items():
        os.environ.setdefault(key, value)
    from shipline.deployment_runs import run_deployment_and_wait

    print("Running stack-check on every environment's worker:")
    failed = False
    for pool in POOLS:
        flow_run = run_deployment_and_wait(f"stack-check/{pool}", timeout=180)
        state = flow_run.state
        if state is not None and state.is_completed():
            identity = state.result()
            print(f"  {pool:<5} executed by {identity.worker} (flow run {flow_run.name})")
        else:
            failed = True
            where = f"{settings.prefect_url}/runs/flow-run/{flow_run.id}"
            print(f"  {pool:<5} {state.name if state else 'no state'}: see {where}")
    print()
    print("Components:")
    for component in status(settings):
        print(f"  {component.name:<12} {component.state:<6} {component.url}")
    print()
    print("Where to look:")
    print(f"  Prefect UI      {settings.prefect_url}  (flow runs, work pools ci/pre/prod, blocks)")
    print(f"  registry        http://{settings.registry_address}/v2/_catalog")
    print(f"  etcd            etcdctl --endpoints {settings.etcd_url} get --prefix /")
    print(
        f"  nginx           {settings.nginx_url}  (apps at http://APP.ENV.localhost:{settings.nginx_port}/)"
    )
    print(f"  logs and state  {settings.home}")
    print("  stop            .venv/bin/shipline down")
    failed = failed or any(c.state is not State.UP for c in status(settings))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
