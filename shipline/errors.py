"""Shipline's one exception tree.

Every failure that reaches a user is a ``ShiplineError``: its message says what failed and where, and
its ``hint`` says what to do next. Foreign exceptions are translated at the boundary with
``raise SomeShiplineError(...) from exc``.

    ShiplineError
    ├── ConfigError            bad settings or input (environment variables, CLI arguments)
    ├── StackError             the embedded local stack
    │   ├── MissingBinaryError     a program Shipline drives is not installed
    │   ├── PortInUseError         a port Shipline needs is held by another program
    │   └── ComponentStartError    a component did not start or did not answer in time
    ├── ServiceUnavailableError    a service the operation needs (etcd, registry, Prefect …) does not answer
    ├── RegistryError          the registry refused a read or a delete of its API (status and body)
    ├── PortAllocationError    no free port for an instance in the environment's range
    ├── ReleaseError           a release record is missing or invalid
    ├── ApprovalError          an approval gate cannot be answered
    ├── NotifyError            GitLab or a notification channel refused a report
    ├── DiscoveryError         nginx rejected a rendered config, or could not be reloaded
    └── StageError             a pipeline stage failed
        ├── SpecError              shipline.yaml is missing or invalid
        ├── CheckoutError          the source, the ref or access to the repository
        ├── BuildError             a build command or an image build failed
        ├── TestFailure            the app's unit tests failed
        ├── PushError              the registry refused or dropped a push
        ├── DeployError            a compose file, a container or a health check failed
        ├── AutoTestError          the app's automated tests failed against a release
        ├── CanaryAborted          a canary broke its limits, or an operator aborted it
        └── ScanError              the static scan could not run, or its quality gate failed

``transient`` marks failures worth retrying (a network error, a registry that is restarting); a task's
retries skip the others, so a missing ref fails at once instead of three times.
"""

from __future__ import annotations


class ShiplineError(Exception):
    """Root of every error Shipline reports to a user.

    Args:
        message: What failed, and where (component, app, env, host).
        hint: What to do next; shown on its own line by the CLI.
        transient: True when trying again may succeed.
    """

    def __init__(self, message: str, *, hint: str | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.transient = transient

    def __str__(self) -> str:
        return self.message


class ConfigError(ShiplineError):
    """A setting or an argument is invalid."""


class StackError(ShiplineError):
    """A component of the embedded local stack failed."""


class MissingBinaryError(StackError):
    """A program that a component runs is not installed."""


class PortInUseError(StackError):
    """A port that a component needs is held by another program."""


class ComponentStartError(StackError):
    """A component exited or did not answer within its start timeout."""


class ServiceUnavailableError(ShiplineError):
    """A service that the operation needs does not answer."""


class RegistryError(ShiplineError):
    """The registry answered a request of its API (catalog, tags, manifests) with an error."""


class PortAllocationError(ShiplineError):
    """No free port for an instance in the environment's range."""


class ReleaseError(ShiplineError):
    """A release record is missing or invalid."""


class ApprovalError(ShiplineError):
    """An approval gate cannot be answered (no such run, or it is not waiting)."""


class NotifyError(ShiplineError):
    """GitLab or a notification channel refused a report."""


class DiscoveryError(ShiplineError):
    """nginx rejected a rendered config (the last good one keeps serving), or could not be reloaded."""

    reloaded: bool = False
    """Whether the changes nginx accepted were applied (and nginx reloaded) before this was raised."""


class StageError(ShiplineError):
    """A pipeline stage failed."""


class CheckoutError(StageError):
    """The repository, the ref, or access to them is wrong."""


class ScanError(StageError):
    """The static scan could not run, or its quality gate failed."""


class DeployError(StageError):
    """A compose file, a container start or a health check failed."""


class AutoTestError(StageError):
    """The app's automated tests failed against a release."""


class CanaryAborted(StageError):
    """A canary's figures broke its spec's limits, or an operator aborted it: the live release serves on."""


class SpecError(StageError):
    """shipline.yaml is missing or invalid."""


class BuildError(StageError):
    """A build command, or the build of an image layer, failed."""


class TestFailure(StageError):
    """The app's unit tests failed (or left no report)."""

    __test__ = False  # not a pytest test class, despite its name


class PushError(StageError):
    """The registry refused or dropped a push."""
