"""Source queries per cache TTL with 1, 100, 1,000 and 10,000 ScaledObjects on one source (goal: 1 at every size).

Each ScaledObject has its own metadata (its own threshold) and name, and all read one Prometheus query.
A separate process calls GetMetrics for every ScaledObject, round-robin with 64 calls in flight, for at
least three TTLs; queries are counted twice: by Prometheus itself (prometheus_http_requests_total for
/api/v1/query) and by the scaler (scaler_source_queries_total).

    .venv/bin/python bench/source_queries.py [--ttl 2]
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import LoadGenerator, Row, print_rows, running_scaler, standalone_prometheus
from tests.fixtures.prometheus import PrometheusServer

SIZES = (1, 100, 1000, 10000)
METRIC = "bench_fanin_depth"


@dataclass
class Size:
    objects: int
    calls: int
    errors: int
    elapsed: float
    ttl: float
    prometheus_queries: float
    scaler_queries: float

    @property
    def windows(self) -> int:
        """TTL windows the calls spanned: at most one query may start in each."""
        return math.ceil(self.elapsed / self.ttl)

    @property
    def per_ttl(self) -> float:
        # Per window started, not per elapsed TTL: calls still in flight at the end run a few ms into one
        # more window, in which one more query is allowed.
        return max(self.prometheus_queries, self.scaler_queries) / self.windows

    @property
    def met(self) -> bool:
        return self.errors == 0 and self.prometheus_queries <= self.windows and self.scaler_queries <= self.windows


def measure_size(prometheus: PrometheusServer, scaler_address: str, scaler: object, objects: int, ttl: float) -> Size:
    before_prometheus = prometheus.query_count()
    before_scaler = scaler.metric("scaler_source_queries_total")  # type: ignore[attr-defined]
    load = LoadGenerator(
        "sweep",
        address=scaler_address,
        prometheus=prometheus.url,
        metric=METRIC,
        objects=objects,
        per_source=objects,  # every ScaledObject on source s0
        duration=3 * ttl,
        concurrency=64,
    )
    try:
        done = load.next_event("done")
    finally:
        load.stop()
    return Size(
        objects,
        int(done["calls"]),  # type: ignore[call-overload]
        int(done["errors"]),  # type: ignore[call-overload]
        float(done["elapsed"]),  # type: ignore[arg-type]
        ttl,
        prometheus.query_count() - before_prometheus,
        scaler.metric("scaler_source_queries_total") - before_scaler,  # type: ignore[attr-defined]
    )


def measure(prometheus: PrometheusServer, ttl: float = 2.0, sizes: tuple[int, ...] = SIZES) -> list[Size]:
    assert prometheus.exporter is not None
    prometheus.exporter.set(METRIC, 7, source="s0")
    prometheus.wait_for_value(f'{METRIC}{{source="s0"}}', 7)
    results = []
    # One scaler per size: each size starts from an empty cache and parse cache.
    for objects in sizes:
        with running_scaler("--cache-ttl", str(ttl)) as scaler:
            results.append(measure_size(prometheus, scaler.address, scaler, objects, ttl))
    return results


def rows(results: list[Size]) -> list[Row]:
    return [
        Row(
            f"Source queries per TTL, {r.objects:,} ScaledObject{'s' if r.objects > 1 else ''} on one source",
            f"{r.per_ttl:.2f} ({r.prometheus_queries:.0f} queries at Prometheus, {r.scaler_queries:.0f} by the "
            f"scaler's counter, in the {r.windows} TTL windows of {r.elapsed:.2f} s)",
            "1 per TTL",
            r.met,
            f"{r.calls:,} GetMetrics in {r.elapsed:.1f} s, TTL {r.ttl:g} s, {r.errors} errors",
        )
        for r in results
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ttl", type=float, default=2.0)
    args = parser.parse_args()
    with standalone_prometheus() as prometheus:
        print_rows(rows(measure(prometheus, args.ttl)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
