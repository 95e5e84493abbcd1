"""What `scaler check` / `scaler watch` found for one ScaledObject, and its table / JSON forms."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adapters.metadata import go_bool

from ..replicas import Decision, TriggerReading, desired_jobs, desired_replicas
from .manifests import ScaledResource
from .probe import TriggerResult

SPARKS = "▁▂▃▄▅▆▇█"
HEADERS = ("TRIGGER", "ADAPTER", "METRIC", "READING", "TARGET", "TYPE", "ACTIVE", "REPLICAS")
History = Mapping[tuple[int, str], Sequence[float]]  # (trigger index, metric name) -> readings, oldest first


@dataclass(frozen=True)
class Report:
    resource: ScaledResource
    results: tuple[TriggerResult, ...]  # one per trigger, in manifest order
    current: int
    decision: Decision

    @property
    def failed(self) -> list[TriggerResult]:
        return [r for r in self.results if r.trigger.external and not r.ok]


def evaluate(resource: ScaledResource, results: Sequence[TriggerResult], current: int) -> Report:
    """The replica decision from every trigger that could be read (failed and non-external ones take no part)."""
    readings = [
        TriggerReading(m.reading, m.target, r.trigger.metric_type, bool(r.active))
        for r in results
        if r.trigger.external and r.ok
        for m in r.metrics
    ]
    if resource.kind == "ScaledJob":
        decision = desired_jobs(readings, resource.bounds.max_replicas)
    else:
        decision = desired_replicas(readings, resource.bounds, current)
    return Report(resource, tuple(results), current, decision)


def warnings(report: Report) -> list[str]:
    """Settings that work, but not as their author may think."""
    found = []
    for result in report.results:
        trigger = result.trigger
        if trigger.external and go_bool(trigger.metadata.get("unsafeSsl", "")):
            found.append(
                f"trigger {trigger.index}: unsafeSsl is also read by KEDA itself: with enableTLS it skips "
                "verifying this scaler's certificate, and the adapter skips verifying the source's"
            )
    return found


def number(value: float) -> str:
    """KEDA keeps milli precision."""
    return f"{value:.3f}".rstrip("0").rstrip(".") or "0"


def sparkline(values: Sequence[float]) -> str:
    if not values:
        return ""
    low, high = min(values), max(values)
    if high == low:
        return SPARKS[0 if high == 0 else len(SPARKS) // 2] * len(values)
    return "".join(SPARKS[round((v - low) / (high - low) * (len(SPARKS) - 1))] for v in values)


def heading(report: Report) -> str:
    r = report.resource
    bounds = f"min {r.bounds.min_replicas}, max {r.bounds.max_replicas}"
    if r.bounds.idle_replicas is not None:
        bounds += f", idle {r.bounds.idle_replicas}"
    if r.kind == "ScaledObject":
        bounds += f", current {report.current}"
    return f"{r.title}  ({bounds})"


def rows(report: Report, history: History | None = None) -> list[list[str]]:
    proposals = iter(report.decision.proposals)
    table: list[list[str]] = []
    for result in report.results:
        trigger = result.trigger
        adapter = trigger.metadata.get("adapter", "-") if trigger.external else "-"
        if not trigger.external:
            table.append([trigger.label, adapter, f"not checked (type {trigger.type} is not an external scaler)"])
            continue
        if not result.ok:
            table.append([trigger.label, adapter, f"error {result.error_code}: {result.error_message}"])
            continue
        active = "yes" if result.active else "no"
        for metric in result.metrics:
            proposal = next(proposals, None)
            row = [
                trigger.label,
                adapter,
                metric.name,
                number(metric.reading),
                number(metric.target),
                trigger.metric_type,
                active,
                "-" if proposal is None else str(proposal),
            ]
            if history is not None:
                row.append(sparkline(history.get((trigger.index, metric.name), ())))
            table.append(row)
    return table


def render_table(report: Report, history: History | None = None) -> str:
    headers = [*HEADERS, "HISTORY"] if history is not None else list(HEADERS)
    body = rows(report, history)
    full = [r for r in body if len(r) == len(headers)]
    widths = [max(len(r[i]) for r in [headers, *(full if i >= 2 else body)]) for i in range(len(headers))]
    lines = [heading(report)]
    for row in [headers, *body]:
        if len(row) == len(headers):
            cells = [
                c.rjust(w) if i in (3, 4, 7) else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
        else:  # a message row spans the columns after TRIGGER and ADAPTER
            cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2]]
        lines.append("  " + "  ".join(cells).rstrip())
    noun = "jobs" if report.resource.kind == "ScaledJob" else "replicas"
    lines.append(f"  => {report.decision.replicas} {noun}: {report.decision.reason}")
    lines += [f"  warning: {text}" for text in warnings(report)]
    return "\n".join(lines)


def to_json(report: Report) -> dict[str, Any]:
    r = report.resource
    proposals = iter(report.decision.proposals)
    triggers = []
    for result in report.results:
        t = result.trigger
        entry: dict[str, Any] = {
            "index": t.index,
            "name": t.name,
            "type": t.type,
            "checked": t.external,
            "adapter": t.metadata.get("adapter") if t.external else None,
            "metricType": t.metric_type if t.external else None,
            "active": result.active,
            "metrics": [
                {"metricName": m.name, "reading": m.reading, "target": m.target, "replicas": next(proposals, None)}
                for m in result.metrics
            ],
            "error": None if result.ok else {"code": result.error_code, "message": result.error_message},
        }
        triggers.append(entry)
    return {
        "kind": r.kind,
        "name": r.name,
        "namespace": r.namespace,
        "source": r.source,
        "minReplicaCount": r.bounds.min_replicas,
        "maxReplicaCount": r.bounds.max_replicas,
        "idleReplicaCount": r.bounds.idle_replicas,
        "currentReplicas": report.current if r.kind == "ScaledObject" else None,
        "replicas": report.decision.replicas,
        "reason": report.decision.reason,
        "warnings": warnings(report),
        "triggers": triggers,
    }
