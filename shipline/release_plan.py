"""What a release flow run is asked to do: which digest of which app goes to which environment, and how."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from shipline.autotest import AutoTests
from shipline.compose import Mount
from shipline.notify import Outcome, ReleaseNotice
from shipline.spec import AppSpec


class ServiceSettings(BaseModel):
    """How the app's instances run (from the ``service`` section of shipline.yaml, for one environment)."""

    port_variable: str = "PORT"
    health_path: str = "/healthz"
    health_timeout_seconds: float = Field(default=60, gt=0)
    replicas: int | None = Field(default=None, ge=1, le=64)
    """None: the environment block's default."""
    environment: dict[str, str] = Field(default_factory=dict)
    command: list[str] = Field(default_factory=list)
    mounts: list[Mount] = Field(default_factory=list)
    cpus: float | None = None
    memory: str | None = None
    stop_grace_seconds: int = Field(default=10, ge=1, le=600)


class ReleaseRequest(BaseModel):
    """Deploy ``image@digest`` of ``app`` (built from ``sha``) to ``env``."""

    app: str
    env: str
    image: str
    digest: str
    sha: str
    committed: datetime | None = None
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    auto_tests: AutoTests = Field(default_factory=AutoTests)
    notification_blocks: list[str] = Field(default_factory=list)
    """Names of Prefect notification blocks (webhook, Slack, apprise …) to tell about the outcome."""
    approval_timeout_seconds: int = Field(default=3600, ge=1)

    def notice(self, outcome: Outcome, release: int, detail: str = "") -> ReleaseNotice:
        """What to tell people about this request's release."""
        return ReleaseNotice(
            app=self.app,
            env=self.env,
            outcome=outcome,
            digest=self.digest,
            sha=self.sha,
            release=release,
            detail=detail[:500],
        )


def request_from_spec(
    spec: AppSpec, *, env: str, image: str, digest: str, sha: str, committed: datetime | None
) -> ReleaseRequest:
    """The release request of the app for ``env``: its service settings as that environment sees them."""
    service = spec.service
    per_env = service.environments.get(env)
    return ReleaseRequest(
        app=spec.app,
        env=env,
        image=image,
        digest=digest,
        sha=sha,
        committed=committed,
        service=ServiceSettings(
            port_variable=service.port_variable,
            health_path=service.health_path,
            health_timeout_seconds=service.health_timeout_seconds,
            replicas=per_env.replicas if per_env else None,
            environment=dict(per_env.environment) if per_env else {},
            mounts=list(service.mounts),
            cpus=service.cpus,
            memory=service.memory,
            stop_grace_seconds=service.stop_grace_seconds,
        ),
        auto_tests=spec.auto_tests,
        notification_blocks=list(spec.notifications),
    )
