"""`make bench`: run every benchmark on the running stack and print the figures."""

from __future__ import annotations

import os
import sys

from shipline.config import load_settings


def main() -> int:
    settings = load_settings()
    for key, value in settings.prefect_environment().items():
        os.environ.setdefault(key, value)
    from bench import (
        build,
        canary,
        deliveries,
        discovery,
        etcd_failover,
        logs,
        pipeline,
        prefect_api,
        rolling,
        routing,
        supervision,
        webhook,
    )

    chosen = sys.argv[1:] or [
        "build",
        "pipeline",
        "deliveries",
        "rolling",
        "canary",
        "discovery",
        "routing",
        "supervision",
        "etcd_failover",
        "webhook",
        "logs",
        "prefect_api",
    ]
    benches = (
        ("build", build),
        ("pipeline", pipeline),
        ("deliveries", deliveries),
        ("rolling", rolling),
        ("canary", canary),
        ("discovery", discovery),
        ("routing", routing),
        ("supervision", supervision),
        ("etcd_failover", etcd_failover),
        ("webhook", webhook),
        ("logs", logs),
        ("prefect_api", prefect_api),
    )
    for name, module in benches:
        if name not in chosen:
            continue
        print(f"== {name}")
        for key, value in module.run(settings).items():
            if isinstance(value, float):
                print(f"  {key:<32} {value:,.3f}")
            elif isinstance(value, int):
                print(f"  {key:<32} {value:,}")
            else:
                print(f"  {key:<32} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
