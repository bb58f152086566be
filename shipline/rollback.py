"""Rolling an app back: replay the request of an earlier release (same digest) as a new release."""

from __future__ import annotations

from shipline.errors import ReleaseError
from shipline.release_plan import ReleaseRequest
from shipline.releases import Release, ReleaseStatus


def rollback_target(history: list[Release], *, to: int | None) -> Release:
    """The release to go back to: ``to``, or the last good one before the current live release.

    Raises:
        ReleaseError: if there is no such release, or it cannot be replayed.
    """
    if not history:
        raise ReleaseError("there is no release to roll back to")
    app, env = history[0].app, history[0].env
    if to is not None:
        target = next((r for r in history if r.number == to), None)
        if target is None:
            raise ReleaseError(
                f"{app}/{env} has no release {to}", hint=f"shipline releases {app} --env {env}"
            )
    else:
        live = [r for r in history if r.status is ReleaseStatus.LIVE]
        before = live[-1].number if live else history[-1].number + 1
        good = [
            r
            for r in history
            if r.number < before and r.status in {ReleaseStatus.LIVE, ReleaseStatus.SUPERSEDED}
        ]
        if not good:
            raise ReleaseError(f"{app}/{env} has no good release before release {before}")
        target = good[-1]
    if not target.request:
        raise ReleaseError(f"release {target.number} of {app}/{env} recorded no request to replay")
    return target


def replay_request(target: Release) -> ReleaseRequest:
    """The request of ``target``, ready to be deployed again."""
    return ReleaseRequest.model_validate(target.request)
