"""The replica count KEDA + the HPA would choose now, from each trigger's reading (pure arithmetic).

Follows the HPA's external-metric code paths: per metric a proposal, the 10 % tolerance judged against
the current replica count, the maximum over metrics, then KEDA's activation and the min/max clamp.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

MetricType = Literal["AverageValue", "Value"]
TOLERANCE = 0.1  # the HPA's default --horizontal-pod-autoscaler-tolerance
DEFAULT_MAX_REPLICAS = 100


@dataclass(frozen=True)
class TriggerReading:
    reading: float
    target: float
    metric_type: MetricType
    active: bool


@dataclass(frozen=True)
class Bounds:
    min_replicas: int = 0
    max_replicas: int = DEFAULT_MAX_REPLICAS
    idle_replicas: int | None = None


@dataclass(frozen=True)
class Decision:
    replicas: int
    proposals: tuple[int, ...]  # one per reading, before the clamp
    reason: str


def _usage_ratio(reading: TriggerReading, current: int) -> float:
    if reading.metric_type == "Value":
        return reading.reading / reading.target
    # AverageValue: the HPA compares the per-pod average with the target.
    return reading.reading / (reading.target * current)


def _outside_tolerance(reading: TriggerReading, current: int) -> bool:
    return abs(_usage_ratio(reading, current) - 1) > TOLERANCE


def proposal(reading: TriggerReading, current: int) -> int:
    """What the HPA proposes for one metric given `current` pods (its tolerance keeps `current`)."""
    if not _outside_tolerance(reading, current):
        return current
    if reading.metric_type == "Value":
        return math.ceil(_usage_ratio(reading, current) * current)
    return average_value_replicas(reading.reading, reading.target)


def average_value_replicas(reading: float, target: float) -> int:
    """The HPA's AverageValue proposal outside its tolerance: enough pods for each to hold `target`."""
    return math.ceil(reading / target)


def from_reading(reading: float, target: float, active: bool) -> int:
    """The replicas KEDA + the HPA would ask for from one AverageValue trigger's reading alone (the scaler
    sees no replica count, bounds or metricType): zero when inactive (minReplicaCount 0), else
    ceil(reading / target), at least one. The same path as `desired_replicas`, started at that count so the
    tolerance cannot hold an unknown current one."""
    wanted = max(1, average_value_replicas(reading, target))
    only = TriggerReading(reading, target, "AverageValue", active)
    return desired_replicas([only], Bounds(max_replicas=2**31 - 1), wanted).replicas


def desired_replicas(readings: Sequence[TriggerReading], bounds: Bounds, current: int) -> Decision:
    """The replica count for a ScaledObject whose triggers read `readings`, now running `current` pods."""
    if not readings:
        return Decision(current, (), "no trigger could be read: stays at the current count")
    active = any(r.active for r in readings)
    if not active:
        if bounds.idle_replicas is not None:
            return Decision(bounds.idle_replicas, (), "every trigger inactive: idleReplicaCount")
        if bounds.min_replicas == 0:
            return Decision(0, (), "every trigger inactive and minReplicaCount 0: scale to zero")
    # KEDA takes a scaled-to-zero target to one pod on activation; the HPA never works from zero.
    working = max(current, 1)
    proposals = tuple(proposal(r, working) for r in readings)
    wanted = max(proposals)
    floor = max(bounds.min_replicas, 1)
    replicas = min(max(wanted, floor), bounds.max_replicas)
    held = any(p == working and not _outside_tolerance(r, working) for p, r in zip(proposals, readings, strict=True))
    if replicas == wanted == working and held:
        reason = f"max over triggers {wanted} (within the HPA's 10% tolerance of the current {working})"
    elif replicas == wanted:
        reason = f"max over triggers {wanted}"
    elif replicas == bounds.max_replicas:
        reason = f"max over triggers {wanted}, capped at maxReplicaCount {bounds.max_replicas}"
    else:
        reason = f"max over triggers {wanted}, raised to the minimum {floor}"
    return Decision(replicas, proposals, reason)


def desired_jobs(readings: Sequence[TriggerReading], max_jobs: int) -> Decision:
    """A ScaledJob's default strategy: ceil(reading / target) per trigger, the maximum, capped (running jobs
    are not subtracted: the CLI cannot see them)."""
    if not readings or not any(r.active for r in readings):
        return Decision(0, (), "every trigger inactive: no jobs" if readings else "no trigger could be read")
    proposals = tuple(math.ceil(r.reading / r.target) if r.active else 0 for r in readings)
    wanted = max(proposals)
    jobs = min(wanted, max_jobs)
    reason = f"max over triggers {wanted}" + (f", capped at maxReplicaCount {max_jobs}" if jobs < wanted else "")
    return Decision(jobs, proposals, reason)
