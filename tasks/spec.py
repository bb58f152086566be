"""Task: read and validate the app's shipline.yaml before any work."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from shipline.spec import AppSpec, load_spec


@task
def read_app_spec(workspace: Path) -> AppSpec:
    """Validate shipline.yaml; a bad spec fails here, naming each field and line."""
    spec = load_spec(workspace)
    get_run_logger().info(
        "app %s: %s on %s/%s", spec.app, spec.image.middleware.name, spec.image.os.name, spec.image.os.version
    )
    return spec
