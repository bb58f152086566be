"""Canary analysis: a verified release takes a share of the traffic, and nginx's figures decide.

Argo Rollouts' canary with an AnalysisRun, without Kubernetes: the release flow puts a traffic split
(``shipline.discovery.splits``) so that the canary's instances, once cleared, take ``weight`` % of the
app's requests beside the live ones; nginx counts every attempt per member (5xx answers, failed connections,
a latency histogram). At the start and at the end of the window the analysis reads those counts, and judges
the canary's figures against the spec's limits (the baseline's figures are shown beside them):

- promote: the canary's 5xx rate is at most ``max_error_rate`` and its p99 latency at most ``max_p99_ms``;
- abort: either limit is broken, or the canary saw fewer than ``min_requests`` requests (no evidence).

An operator may end the window early (``shipline promote`` / ``shipline abort``): the decision written into
the split is read four times a second.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Collection, Mapping

from pydantic import BaseModel

from shipline.discovery.routes import LATENCY_STEP, PeerStats, RoutingTable, upstream_name
from shipline.discovery.splits import Decision, TrafficSplit, read_split
from shipline.errors import DeployError
from shipline.etcd_client import connect
from shipline.spec import CanarySpec

POLL_SECONDS = 0.25
ROUTED_TIMEOUT = 30.0
"""How long nginx is given to route the split once the canary's instances are registered."""


class GroupFigures(BaseModel):
    """What nginx measured of one side of the split during the window."""

    members: list[str]
    requests: int
    errors: int
    error_rate: float | None
    """5xx answers (and failed connections) per request; None without requests."""
    p99_ms: float | None
    """The 99th percentile latency, to the upper bound of its 5 % bucket; None without requests."""

    def line(self) -> str:
        if not self.requests or self.error_rate is None:
            return "no request"
        return f"{self.errors}/{self.requests} 5xx ({self.error_rate:.1%}), p99 {self.p99_ms:.0f} ms"


class CanaryVerdict(BaseModel):
    """The canary's outcome, with both sides' figures."""

    app: str
    env: str
    release: int
    decision: Decision
    decided_by: str
    """``analysis``, or ``operator NAME`` for an early end."""
    reasons: list[str]
    canary: GroupFigures
    baseline: GroupFigures
    limits: CanarySpec
    window_seconds: float
    decision_seconds: float
    """From the end of the window (or the operator's decision being read) to the verdict."""

    @property
    def promoted(self) -> bool:
        return self.decision == "promote"

    def summary(self) -> str:
        """One line for the release record, ``shipline releases`` and the flow's messages."""
        verb = "promoted" if self.promoted else "aborted"
        return (
            f"canary {verb} by {self.decided_by} after {self.window_seconds:.0f} s "
            f"at {self.limits.weight} %: "
            f"{'; '.join(self.reasons)} — canary {self.canary.line()}; baseline {self.baseline.line()}"
        )

    def table(self) -> list[dict[str, str | int]]:
        """The analysis as rows for a Prefect table artifact."""
        limits = f"≤ {self.limits.max_error_rate:.1%} 5xx, p99 ≤ {self.limits.max_p99_ms:g} ms"
        rows: list[dict[str, str | int]] = []
        decided = f"{self.decision_seconds * 1000:.0f}"
        for side, figures in (("canary", self.canary), ("baseline", self.baseline)):
            rows.append(
                {
                    "side": side,
                    "members": ", ".join(figures.members),
                    "requests": figures.requests,
                    "5xx": figures.errors,
                    "error rate": "n/a" if figures.error_rate is None else f"{figures.error_rate:.2%}",
                    "p99 ms": "n/a" if figures.p99_ms is None else f"{figures.p99_ms:.0f}",
                    "limits": limits if side == "canary" else "(for comparison)",
                    "decision": f"{self.decision} ({self.decided_by})" if side == "canary" else "",
                    "decided ms after the window": decided if side == "canary" else "",
                }
            )
        return rows


def p99_ms(buckets: Mapping[int, int]) -> float | None:
    """The 99th percentile of a latency histogram, as the upper bound of the bucket that holds it."""
    total = sum(buckets.values())
    if total == 0:
        return None
    needed, seen = math.ceil(0.99 * total), 0
    for bucket in sorted(buckets):
        seen += buckets[bucket]
        if seen >= needed:
            return float(LATENCY_STEP**bucket)
    return float(LATENCY_STEP ** max(buckets))  # not reached: the buckets add up to total


def figures(window: Mapping[str, PeerStats], members: Collection[str]) -> GroupFigures:
    """The figures of ``members`` in nginx's counts of the window."""
    requests = errors = 0
    buckets: dict[int, int] = {}
    for member in members:
        stats = window.get(member, PeerStats())
        requests += stats.attempts
        errors += stats.errors
        for bucket, count in stats.buckets.items():
            buckets[bucket] = buckets.get(bucket, 0) + count
    return GroupFigures(
        members=sorted(members),
        requests=requests,
        errors=errors,
        error_rate=errors / requests if requests else None,
        p99_ms=p99_ms(buckets),
    )


def judge(canary: GroupFigures, limits: CanarySpec) -> tuple[Decision, list[str]]:
    """Promote or abort, and why, by the canary's figures against the spec's limits."""
    if canary.requests < max(limits.min_requests, 1):
        return "abort", [
            f"{canary.requests} canary request(s), fewer than min_requests {limits.min_requests}"
        ]
    assert canary.error_rate is not None and canary.p99_ms is not None
    broken = []
    if canary.error_rate > limits.max_error_rate:
        broken.append(f"5xx rate {canary.error_rate:.1%} > max_error_rate {limits.max_error_rate:.1%}")
    if canary.p99_ms > limits.max_p99_ms:
        broken.append(f"p99 {canary.p99_ms:.0f} ms > max_p99_ms {limits.max_p99_ms:g} ms")
    if broken:
        return "abort", broken
    return "promote", [
        f"5xx rate {canary.error_rate:.1%} ≤ {limits.max_error_rate:.1%}, "
        f"p99 {canary.p99_ms:.0f} ms ≤ {limits.max_p99_ms:g} ms"
    ]


def window_counts(before: Mapping[str, PeerStats], after: Mapping[str, PeerStats]) -> dict[str, PeerStats]:
    """Each member's counts added during the window."""
    return {member: stats.since(before.get(member, PeerStats())) for member, stats in after.items()}


async def wait_until_routed(
    table: RoutingTable, split: TrafficSplit, *, timeout: float = ROUTED_TIMEOUT
) -> None:
    """Return once nginx's table routes ``weight`` % to every member of the split.

    Raises:
        DeployError: nginx did not within ``timeout`` seconds (discover down, or the instances never
            registered).
    """
    upstream = upstream_name(split.app, split.env)
    deadline = time.monotonic() + timeout
    while True:
        members = (await table.members()).get(upstream, [])
        if f"|{split.weight}" in members and set(split.members) <= set(members):
            return
        if time.monotonic() > deadline:
            raise DeployError(
                f"{split.app}/{split.env}: nginx did not route {split.weight} % to the canary "
                f"{', '.join(split.members)} within {timeout:.0f} s "
                f"(its members: {', '.join(members) or 'none'})",
                hint="shipline status shows whether discover and the registrator run",
            )
        await asyncio.sleep(0.05)


async def analyse(
    split: TrafficSplit,
    limits: CanarySpec,
    *,
    etcd_url: str,
    table: RoutingTable,
    log: Callable[[str], None],
) -> CanaryVerdict:
    """Measure the canary for its window (or until an operator decides) and judge it.

    Raises:
        DeployError: nginx never routed the split.
        DiscoveryError: nginx's table does not answer.
    """
    upstream = upstream_name(split.app, split.env)
    await wait_until_routed(table, split)
    before = await table.stats(upstream)
    started = time.monotonic()
    ends = started + limits.seconds
    log(
        f"canary of release {split.release}: {split.weight} % of the requests to {', '.join(split.members)} "
        f"for {limits.seconds:g} s"
    )
    decided_by, decision = "analysis", None
    async with connect(etcd_url) as client:
        while (now := time.monotonic()) < ends:
            held = await read_split(client, split.app, split.env)
            if held is not None and held.decision is not None:
                decided_by, decision = f"operator {held.decided_by or 'unknown'}", held.decision
                break
            await asyncio.sleep(min(POLL_SECONDS, max(0.0, ends - now)))
    window_end = time.monotonic()
    counts = window_counts(before, await table.stats(upstream))
    canary = figures(counts, split.members)
    baseline = figures(counts, [m for m, c in counts.items() if m not in split.members and c.attempts])
    decided, reasons = judge(canary, limits)
    if decision is not None:
        reasons = [f"ended early by {decided_by}", *reasons] if decision != decided else reasons
        decided = decision
    return CanaryVerdict(
        app=split.app,
        env=split.env,
        release=split.release,
        decision=decided,
        decided_by=decided_by,
        reasons=reasons,
        canary=canary,
        baseline=baseline,
        limits=limits,
        window_seconds=window_end - started,
        decision_seconds=time.monotonic() - window_end,
    )
