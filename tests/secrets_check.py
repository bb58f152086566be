"""Where a secret shows up: every log line, artifact, parameter and state message of some flow runs, and
the stack's log files. A delivery must leave a token in none of them."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from pathlib import Path
from uuid import UUID

import docker
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterParentTaskRunId,
    LogFilter,
    LogFilterFlowRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)

PAGE = 200


def forms(secret: str) -> list[str]:
    """The secret as it might leak: as is, and base64 in an HTTP Basic header (GitLab's ``oauth2:``)."""
    return [secret, base64.b64encode(f"oauth2:{secret}".encode()).decode()]


def run_tree(root: UUID) -> list[UUID]:
    """The flow run and every flow run under it (release runs started by its tasks), depth first."""
    found, pending = [], [root]
    with get_client(sync_client=True) as client:
        while pending:
            run_id = pending.pop()
            found.append(run_id)
            tasks = client.read_task_runs(
                task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[run_id]))
            )
            if not tasks:
                continue
            children = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_task_run_id=FlowRunFilterParentTaskRunId(any_=[t.id for t in tasks])
                )
            )
            pending += [child.id for child in children]
    return found


def texts_of_runs(run_ids: list[UUID]) -> Iterable[tuple[str, str]]:
    """(where, text) for every log line, artifact, parameter set and state message of the runs."""
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=run_ids)), limit=PAGE, offset=offset
            )
            for log in logs:
                yield f"log line of run {log.flow_run_id}", log.message
            if len(logs) < PAGE:
                break
            offset += PAGE
        for artifact in client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=run_ids))
        ):
            yield f"artifact {artifact.key or artifact.id}", f"{artifact.data} {artifact.description}"
        for run_id in run_ids:
            run = client.read_flow_run(run_id)
            yield f"parameters of run {run_id}", repr(run.parameters)
            yield f"state of run {run_id}", repr(run.state.message if run.state else "")
            for task_run in client.read_task_runs(
                task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[run_id]))
            ):
                message = task_run.state.message if task_run.state else ""
                yield f"state of task run {task_run.name}", repr(message)


def places_holding(secret: str, run_ids: list[UUID], log_files: Iterable[Path]) -> list[str]:
    """Every place where ``secret`` (in any of its ``forms``) is found; empty when it leaked nowhere."""
    wanted = forms(secret)
    places = [where for where, text in texts_of_runs(run_ids) if any(form in text for form in wanted)]
    for path in log_files:
        content = path.read_text(errors="replace")
        places += [f"{path.name}" for form in wanted if form in content]
    return places


def files_holding(secret: str, root: Path) -> list[str]:
    """Files under ``root`` that hold ``secret`` in any of its forms (links are not followed)."""
    wanted = [form.encode() for form in forms(secret)]
    assert root.is_dir(), f"{root} does not exist"
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            content = path.read_bytes()
            found += [str(path.relative_to(root)) for form in wanted if form in content]
    return found


def results_holding(secret: str, root: Path) -> list[str]:
    """Persisted Prefect results under ``root`` (base64 of a pickle, or JSON) that hold ``secret``."""
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            content = path.read_bytes()
            try:
                decoded = base64.b64decode(content, validate=False)
            except binascii.Error:  # not base64: JSON, or a bare value
                decoded = b""
            if secret.encode() in content or secret.encode() in decoded:
                found.append(str(path.relative_to(root)))
    return found


def containers_holding(secret: str, client: docker.DockerClient, app: str) -> list[str]:
    """Containers of ``app`` whose definition (environment, labels, command, mounts) holds ``secret``."""
    wanted = forms(secret)
    found = []
    for container in client.containers.list(all=True, filters={"label": f"shipline.app={app}"}):
        definition = json.dumps(container.attrs)
        found += [str(container.name) for form in wanted if form in definition]
    return found
