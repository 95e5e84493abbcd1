"""The replica arithmetic of ../shared/KEDA-PROTOCOL.md, case by case (pure function, no services)."""

from __future__ import annotations

import pytest

from scaler.replicas import Bounds, TriggerReading, desired_jobs, desired_replicas


def avg(reading: float, target: float, active: bool = True) -> TriggerReading:
    return TriggerReading(reading, target, "AverageValue", active)


def value(reading: float, target: float, active: bool = True) -> TriggerReading:
    return TriggerReading(reading, target, "Value", active)


CASES = [
    # (case, readings, bounds, current, expected replicas)
    ("AverageValue is ceil(reading / target)", [avg(25, 10)], Bounds(0, 10), 0, 3),
    ("AverageValue exact multiple", [avg(30, 10)], Bounds(0, 10), 0, 3),
    ("Value is ceil(current * reading / target)", [value(25, 10)], Bounds(1, 20), 4, 10),
    ("Value below target scales down", [value(5, 10)], Bounds(1, 20), 4, 2),
    ("Value from zero replicas works from one pod", [value(25, 10)], Bounds(0, 20), 0, 3),
    ("maximum over triggers", [avg(25, 10), avg(70, 10), value(1, 1)], Bounds(0, 100), 2, 7),
    ("an inactive trigger still counts while another is active", [avg(5, 1, False), avg(2, 1)], Bounds(0, 100), 1, 5),
    ("clamped to maxReplicaCount", [avg(1000, 10)], Bounds(0, 10), 0, 10),
    ("default maxReplicaCount is 100", [avg(1e6, 1)], Bounds(0), 0, 100),
    ("raised to minReplicaCount", [avg(1, 10)], Bounds(3, 10), 3, 3),
    ("active with min 0 gives at least one", [avg(0.5, 10)], Bounds(0, 10), 0, 1),
    ("all inactive and min 0 scales to zero", [avg(0, 10, False), avg(0, 5, False)], Bounds(0, 10), 4, 0),
    ("all inactive with idleReplicaCount", [avg(0, 10, False)], Bounds(2, 10, 0), 2, 0),
    ("all inactive but min above 0 keeps the HPA's count", [avg(0, 10, False)], Bounds(2, 10), 5, 2),
    ("AverageValue within 10% tolerance keeps current", [avg(105, 10)], Bounds(1, 20), 10, 10),
    ("AverageValue exactly 10% below keeps current", [avg(90, 10)], Bounds(1, 20), 10, 10),
    ("AverageValue beyond 10% moves", [avg(111, 10)], Bounds(1, 20), 10, 12),
    ("AverageValue 9% below keeps current", [avg(91, 10)], Bounds(1, 20), 10, 10),
    ("AverageValue 20% below moves", [avg(80, 10)], Bounds(1, 20), 10, 8),
    ("Value within tolerance keeps current", [value(10.9, 10)], Bounds(1, 20), 4, 4),
    ("Value beyond tolerance moves", [value(11.5, 10)], Bounds(1, 20), 4, 5),
    ("tolerance is judged per trigger before the maximum", [avg(105, 10), avg(20, 10)], Bounds(1, 20), 10, 10),
]


@pytest.mark.parametrize(
    ("readings", "bounds", "current", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_desired_replicas(readings: list[TriggerReading], bounds: Bounds, current: int, expected: int) -> None:
    assert desired_replicas(readings, bounds, current).replicas == expected


def test_per_trigger_proposals_are_reported_in_order() -> None:
    decision = desired_replicas([avg(25, 10), avg(0, 5, False)], Bounds(0, 10), 0)
    assert decision.proposals == (3, 0)
    assert decision.reason == "max over triggers 3"


def test_reason_says_when_the_maximum_caps() -> None:
    decision = desired_replicas([avg(1000, 10)], Bounds(0, 10), 0)
    assert "capped at maxReplicaCount 10" in decision.reason


def test_reason_says_when_the_tolerance_holds_the_count() -> None:
    decision = desired_replicas([avg(42, 10), avg(1, 5, False)], Bounds(0, 20), 4)
    assert (decision.replicas, decision.proposals) == (4, (4, 1))
    assert decision.reason == "max over triggers 4 (within the HPA's 10% tolerance of the current 4)"


def test_no_readable_trigger_keeps_the_current_count() -> None:
    assert desired_replicas([], Bounds(0, 10), 4).replicas == 4


@pytest.mark.parametrize(
    ("readings", "max_jobs", "expected"),
    [
        ([avg(25, 10)], 100, 3),
        ([avg(25, 10), avg(41, 10)], 100, 5),
        ([avg(250, 10)], 7, 7),
        ([avg(0, 10, False)], 100, 0),
    ],
)
def test_scaled_job_wants_ceil_reading_over_target_capped(
    readings: list[TriggerReading], max_jobs: int, expected: int
) -> None:
    assert desired_jobs(readings, max_jobs).replicas == expected
