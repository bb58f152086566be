"""The road to an environment: the environments where the same digest must have gone live first.

Policy, not a flag: it is the environment block's ``requires_passed`` (an operator's setting), and the
release flow enforces it before anything else — so neither ``shipline run --env prod``, nor a run of the
``release-to-prod`` deployment started by hand, nor the app's spec can skip PRE. ``None`` means the built-in
road: PROD takes only a digest that went live in PRE; every other environment takes any.

"Went live" is a release of that digest, in that environment, that was ``live`` (and may have been
``superseded`` since): a rollback to a digest that once passed is allowed; a digest that only failed or was
rolled back there has not passed.
"""

from __future__ import annotations

from collections.abc import Callable

from shipline.errors import ReleaseError
from shipline.release.history import Release, ReleaseStatus

DEFAULT_ROAD: dict[str, list[str]] = {"prod": ["pre"]}
"""The road when an environment's block says nothing (``requires_passed`` unset)."""
PASSED = frozenset({ReleaseStatus.LIVE, ReleaseStatus.SUPERSEDED})


def required_before(env: str, requires_passed: list[str] | None) -> list[str]:
    """The environments a digest must have gone live in before ``env``."""
    return list(DEFAULT_ROAD.get(env, [])) if requires_passed is None else list(requires_passed)


def check_road(
    *, app: str, env: str, digest: str, required: list[str], history: Callable[[str], list[Release]]
) -> list[int]:
    """Refuse a release of ``digest`` to ``env`` unless it went live in every ``required`` environment.

    Args:
        history: The app's release history in an environment.

    Returns:
        For each required environment, the number of the newest release that passed with this digest.

    Raises:
        ReleaseError: naming the environment it has not passed and where the rule is set.
    """
    passed = []
    for before in required:
        numbers = [r.number for r in history(before) if r.digest == digest and r.status in PASSED]
        if not numbers:
            short = digest.removeprefix("sha256:")[:12]
            raise ReleaseError(
                f"{app} {short} has not passed {before}: {env} takes only a digest that went live in "
                f"{', '.join(required)} first",
                hint=f"deliver it through {before} first (shipline run SOURCE delivers to pre, then prod); "
                f"the rule is requires_passed of the shipline-environment/{env} block",
            )
        passed.append(max(numbers))
    return passed
