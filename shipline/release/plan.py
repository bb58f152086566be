"""What a release flow run is asked to do: which digest of which app goes to which environment, and how.

The request carries the app spec's own ``service`` section (one model, validated once, in
``shipline.spec``); everything the deploy needs for one environment is derived from it here.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import Field, field_validator, model_validator

from shipline.names import NAME_PATTERN
from shipline.release.history import ReleaseSubject
from shipline.release.notify import Outcome, ReleaseNotice
from shipline.spec import AppSpec, AutoTests, EnvironmentSettings, ServiceSpec, foreign_secrets

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_REPOSITORY = re.compile(r"[a-z0-9][a-z0-9._:/-]{0,254}")


class ReleaseRequest(ReleaseSubject):
    """Deploy ``image@digest`` of ``app`` (built from ``sha``) to ``env``, as the app spec says."""

    service: ServiceSpec = Field(default_factory=ServiceSpec)
    auto_tests: AutoTests = Field(default_factory=AutoTests)
    notification_blocks: list[str] = Field(default_factory=list)
    """Names of Prefect notification blocks (webhook, Slack, apprise …) to tell about the outcome."""
    approval_timeout_seconds: int = Field(default=3600, ge=1)

    @field_validator("app", "env")
    @classmethod
    def _name(cls, value: str) -> str:
        if NAME_PATTERN.fullmatch(value) is None:
            raise ValueError(f"{value!r} is not a name (lower-case letters, digits and dashes)")
        return value

    @field_validator("image")
    @classmethod
    def _repository(cls, value: str) -> str:
        if _REPOSITORY.fullmatch(value) is None or "@" in value:
            raise ValueError(f"{value!r} is not an image repository (lower-case, no tag or digest)")
        return value

    @field_validator("digest")
    @classmethod
    def _digest(cls, value: str) -> str:
        if _DIGEST.fullmatch(value) is None:
            raise ValueError(f"{value!r} is not a sha256 digest: apps are deployed by digest, never by tag")
        return value

    @model_validator(mode="after")
    def _own_secrets_only(self) -> ReleaseRequest:
        # A request started by hand (Run in the UI) never met the spec's rule: it is the same rule.
        problems = foreign_secrets(self.app, self.service)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="before")
    @classmethod
    def _recorded_before_one_service_model(cls, data: Any) -> Any:
        # Releases recorded before the request carried the spec's service section held the one
        # environment's replicas and variables flat in it; a rollback to such a release still replays it.
        if not isinstance(data, dict) or not isinstance(data.get("service"), dict):
            return data
        service = dict(data["service"])
        if "replicas" not in service and "environment" not in service:
            return data
        settings = {"replicas": service.pop("replicas", None), "environment": service.pop("environment", {})}
        service.pop("command", None)
        service["environments"] = {data.get("env", ""): settings}
        return {**data, "service": service}

    @property
    def settings(self) -> EnvironmentSettings:
        """The app's settings in this request's environment."""
        return self.service.in_environment(self.env)

    def replicas(self, default: int) -> int:
        """How many instances: the spec's number for this environment, else the environment's ``default``."""
        return self.settings.replicas or default

    def requires_approval(self, environment_requires: bool) -> bool:
        """Whether the deploy waits for an operator: the environment's block, or the app's own spec, asks."""
        return environment_requires or self.settings.requires_approval

    def masked(self) -> ReleaseRequest:
        """This request as people read it: plain values under secret-looking names masked (``****``)."""
        return self.model_copy(update={"service": self.service.masked()})

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
    """The release request of the app's ``image@digest`` for ``env``."""
    return ReleaseRequest(
        app=spec.app,
        env=env,
        image=image,
        digest=digest,
        sha=sha,
        committed=committed,
        service=spec.service,
        auto_tests=spec.auto_tests,
        notification_blocks=list(spec.notifications),
    )
