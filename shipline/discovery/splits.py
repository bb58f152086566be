"""Traffic splits in etcd: a canary release's share of an app's requests, which discover gives to nginx.

``/shipline/canary/{app}/{env}`` → a ``TrafficSplit`` (JSON): the canary release, its members
(``ip:port``) and the percent of requests they take. While the key exists, discover writes the app's route
as the live members, a ``|WEIGHT`` marker and the canary members, and nginx sends exactly ``WEIGHT`` of
every hundred requests to the canary (``templates/nginx/lua/shipline_routes.lua``). Only registered members
count: the canary's instances enter the route once their release is cleared, like any instance.

The release flow puts the key before its canary is cleared (so that the canary never takes more than its
share) and deletes it once the canary is promoted (the old members are gone) or aborted (the canary's
are). An operator ends a canary early by writing a decision into the key (``shipline promote`` / ``abort``).
"""

from __future__ import annotations

import re
from typing import Literal

import aetcd
from pydantic import BaseModel, Field

from shipline.errors import ReleaseError
from shipline.names import validate_name

CANARY = "/shipline/canary/"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")

Decision = Literal["promote", "abort"]


class TrafficSplit(BaseModel):
    """A canary release's share of an app's traffic in one environment."""

    app: str
    env: str
    release: int
    weight: int = Field(ge=1, le=99)
    """Percent of the requests the canary members take."""
    members: list[str]
    """The canary's instances, ``ip:port`` as etcd's instance values write them."""
    decision: Decision | None = None
    """An operator's early end of the canary; None while the analysis decides."""
    decided_by: str | None = None


def split_key(app: str, env: str) -> str:
    return f"{CANARY}{validate_name(app, what='app name')}/{validate_name(env, what='environment')}"


def parse_split_key(key: str) -> tuple[str, str] | None:
    """``(app, env)`` of a split key, or None for any other key."""
    if not key.startswith(CANARY):
        return None
    parts = key[len(CANARY) :].split("/")
    if len(parts) != 2 or not all(_NAME.match(p) for p in parts):
        return None
    return parts[0], parts[1]


def parse_split(value: bytes) -> TrafficSplit | None:
    """The split a key's value holds, or None for a value that is not one (it routes as if absent)."""
    try:
        return TrafficSplit.model_validate_json(value)
    except ValueError:
        return None


async def put_split(client: aetcd.Client, split: TrafficSplit) -> None:
    await client.put(split_key(split.app, split.env).encode(), split.model_dump_json().encode())


async def read_split(client: aetcd.Client, app: str, env: str) -> TrafficSplit | None:
    found = await client.get(split_key(app, env).encode())
    return parse_split(found.value) if found is not None else None


async def delete_split(client: aetcd.Client, app: str, env: str) -> None:
    await client.delete(split_key(app, env).encode())


async def decide_split(client: aetcd.Client, app: str, env: str, decision: Decision, by: str) -> TrafficSplit:
    """Record an operator's decision on the running canary of ``app`` in ``env``; the release flow acts on
    it within a second.

    Raises:
        ReleaseError: no canary of the app runs in the environment, or it was decided already.
    """
    key = split_key(app, env).encode()
    for _ in range(10):
        found = await client.get(key)
        split = parse_split(found.value) if found is not None else None
        if found is None or split is None:
            raise ReleaseError(
                f"no canary of {app} runs in {env}",
                hint=f"shipline releases {app} --env {env} shows its releases",
            )
        if split.decision is not None:
            raise ReleaseError(
                f"the canary of {app} in {env} (release {split.release}) was decided already: "
                f"{split.decision} by {split.decided_by}"
            )
        decided = split.model_copy(update={"decision": decision, "decided_by": by})
        if await _replace(client, key, found.value, decided.model_dump_json().encode()):
            return decided
    raise ReleaseError(f"the canary of {app} in {env} kept changing: try again", transient=True)


async def _replace(client: aetcd.Client, key: bytes, old: bytes, new: bytes) -> bool:
    """Put ``new`` only if the key still holds ``old``."""
    succeeded, _ = await client.transaction(
        compare=[client.transactions.value(key) == old],
        success=[client.transactions.put(key, new)],
        failure=[],
    )
    return bool(succeeded)
