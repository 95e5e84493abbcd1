"""The status page's per-call cost: StatusBoard.reading / failed next to the /metrics record the service
already makes on every call (the baseline, timed in the same run), for 2,000 ScaledObjects in rotation.

    .venv/bin/python bench/status_board.py [--calls 200000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.api import AdapterContext, AdapterRegistry, HttpClients, SourceUnavailable
from scaler._generated import externalscaler_pb2 as pb
from scaler.metrics import ScalerMetrics
from scaler.status import StatusBoard
from scaler.triggers import TriggerParser

OBJECTS = 2000


def best_of(runs: int, fn: Any) -> float:
    return min(fn() for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    triggers = TriggerParser(AdapterRegistry(AdapterContext(http=HttpClients(), default_timeout=5.0)), {}, 5.0, 10_000)
    metadata = {"adapter": "prometheus", "serverAddress": "http://prometheus:9090", "query": "up", "threshold": "5"}
    trigger = triggers.parse(metadata, "shop")
    refs = [pb.ScaledObjectRef(name=f"so-{i}", namespace="shop", scalerMetadata=metadata) for i in range(OBJECTS)]
    series = ScalerMetrics(120).objects
    board = StatusBoard(120, 5000)
    error = SourceUnavailable("cannot reach Prometheus at http://prometheus:9090")
    n = args.calls

    def timed(call: Any) -> float:
        started = time.perf_counter()
        for i in range(n):
            call(refs[i % OBJECTS], i)
        return (time.perf_counter() - started) / n * 1e9

    def baseline(ref: Any, i: int) -> None:
        series.record(ref.namespace, ref.name, trigger.metric_name, value=1.0, read_at=float(i // 50), stale=False)

    def reading(ref: Any, i: int) -> None:
        board.reading(ref, trigger, 1.0, float(i // 50), stale=False, requested=trigger.metric_name)

    def failed(ref: Any, i: int) -> None:
        board.failed(ref, trigger, error)

    base = best_of(3, lambda: timed(baseline))
    print(f"{'call':<40} {'ns/call':>8} {'x baseline':>11}")
    print(f"{'ScaledObjectSeries.record (baseline)':<40} {base:>8.0f} {1.0:>11.2f}")
    for name, call in (("StatusBoard.reading", reading), ("StatusBoard.failed (same error)", failed)):
        cost = best_of(3, lambda call=call: timed(call))
        print(f"{name:<40} {cost:>8.0f} {cost / base:>11.2f}")


if __name__ == "__main__":
    main()
