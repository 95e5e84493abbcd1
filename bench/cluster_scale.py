"""10,000 distinct ScaledObjects polled like KEDA plus 2,000 open StreamIsActive streams: the scaler's RSS and CPU.

The distribution (stated in BENCHMARKS.md): 1,000 Prometheus sources (one series each, scraped every
second), 10 ScaledObjects per source, each with its own metadata (threshold) and name, over 50 namespaces.
Every ScaledObject gets GetMetricSpec once, then GetMetrics + IsActive every 30 s (KEDA's polling
default) and another GetMetrics every 15 s (the HPA's default sync through KEDA's metrics server), at
random phases: 1,333 calls/s in steady state. The first 2,000 ScaledObjects (200 sources) are
`external-push` triggers holding a StreamIsActive open. The load runs in its own process (bench/keda_load.py);
psutil samples the scaler process over the measured window after one full polling interval of warm-up.
The scaler runs on its defaults (cache TTL 5 s, push interval 1 s).

    .venv/bin/python bench/cluster_scale.py [--window 60]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import LoadGenerator, Row, print_rows, running_scaler, standalone_prometheus, start_profile
from tests.fixtures.prometheus import PrometheusServer

METRIC = "bench_cluster_depth"
RSS_GOAL_MB = 200
CPU_GOAL = 0.5
OBJECTS, PER_SOURCE, STREAMS, POLL, HPA = 10_000, 10, 2_000, 30.0, 15.0


@dataclass
class Scale:
    cache_ttl: float | None  # None: the scaler's default
    window: float
    cpu_cores: float
    rss_max_mb: float
    rss_start_mb: float
    load_cores: float
    calls_per_s: float
    expected_calls_per_s: float
    errors: int
    stream_errors: int
    streams_reopened: int
    source_queries_per_s: float
    streams_open: float
    pollers: float
    error_samples: list[str]
    in_flight_at_end: int
    load_average: float  # the machine's 1-minute load average at the end of the window

    @property
    def load_kept_up(self) -> bool:
        return self.calls_per_s >= 0.9 * self.expected_calls_per_s and self.errors == 0

    def rows(self) -> list[Row]:
        ttl = "" if self.cache_ttl is None else f", --cache-ttl {self.cache_ttl:g}"
        per_call_ms = self.cpu_cores / self.calls_per_s * 1000
        load = (
            f"{self.calls_per_s:.0f} calls/s served (KEDA-like schedule asks {self.expected_calls_per_s:.0f}; "
            f"{self.in_flight_at_end} still in flight at the end), {self.errors} errors, "
            f"{self.streams_open:.0f} streams and {self.pollers:.0f} pollers open ({self.streams_reopened} ended at "
            "connection age and reopened, as KEDA does), "
            f"{self.source_queries_per_s:.0f} source queries/s, {per_call_ms:.2f} ms CPU per call served; "
            f"{self.window:.0f} s window after {POLL:.0f} s warm-up; machine load average {self.load_average:.1f} "
            f"on {os.cpu_count()} cores"
        )
        if self.error_samples:
            load += f"; first error: {self.error_samples[0][:160]}"
        return [
            Row(
                f"10,000 ScaledObjects polled like KEDA + 2,000 StreamIsActive{ttl}: scaler RSS",
                f"{self.rss_max_mb:.0f} MB max ({self.rss_max_mb / RSS_GOAL_MB:.2f}x the goal; "
                f"{self.rss_start_mb:.0f} MB idle after start)",
                f"<= {RSS_GOAL_MB} MB",
                self.rss_max_mb <= RSS_GOAL_MB and self.load_kept_up,
                load,
            ),
            Row(
                f"same{ttl}: CPU of the scaler process",
                f"{self.cpu_cores:.2f} core ({self.cpu_cores / self.load_cores:.2f}x the load generator's "
                f"{self.load_cores:.2f} core)",
                f"<= {CPU_GOAL} core",
                self.cpu_cores <= CPU_GOAL and self.load_kept_up,
                "user+system CPU time of the scaler process / wall time of the window",
            ),
        ]


def prepare(prometheus: PrometheusServer) -> None:
    """One series per source at the exporter, and Prometheus has scraped the last of them."""
    exporter = prometheus.exporter
    assert exporter is not None
    for source in range(OBJECTS // PER_SOURCE):
        exporter.set(METRIC, source % 5, source=f"s{source}")
    last = OBJECTS // PER_SOURCE - 1
    prometheus.wait_for_value(f'{METRIC}{{source="s{last}"}}', last % 5)


def cluster_load(address: str, prometheus: PrometheusServer, duration: float, **options: object) -> LoadGenerator:
    """The cluster shape's KEDA-like load (bench/keda_load.py) against `address`, in its own process."""
    return LoadGenerator(
        "cluster",
        address=address,
        prometheus=prometheus.url,
        metric=METRIC,
        objects=OBJECTS,
        per_source=PER_SOURCE,
        streams=STREAMS,
        poll=POLL,
        hpa=HPA,
        duration=duration,
        **options,
    )


def measure(prometheus: PrometheusServer, window: float = 60.0, cache_ttl: float | None = None) -> Scale:
    prepare(prometheus)
    with running_scaler(*(["--cache-ttl", str(cache_ttl)] if cache_ttl else [])) as scaler:
        process = psutil.Process(scaler.proc.pid)
        rss_start = process.memory_info().rss
        load = cluster_load(scaler.address, prometheus, window + 2)
        try:
            load.next_event("warm")
            load_process = psutil.Process(load.proc.pid)
            started = time.monotonic()
            cpu_before, load_before = process.cpu_times(), load_process.cpu_times()
            before = scaler.metrics_text()
            calls_before = scaler.metric("scaler_grpc_requests_total", snapshot=before)
            queries_before = scaler.metric("scaler_source_queries_total", snapshot=before)
            rss_max = process.memory_info().rss
            start_profile(process.pid, window, f"cluster_scale_ttl{cache_ttl or 'default'}")
            while time.monotonic() - started < window:
                time.sleep(min(2.0, window - (time.monotonic() - started)))
                rss_max = max(rss_max, process.memory_info().rss)
            elapsed = time.monotonic() - started
            load_average = os.getloadavg()[0]
            cpu_after, load_after = process.cpu_times(), load_process.cpu_times()
            # One scrape for every figure: under this load a scrape can take seconds, and the load generator
            # starts closing its streams right after the window, so separate scrapes disagreed.
            after = scaler.metrics_text()
            calls = scaler.metric("scaler_grpc_requests_total", snapshot=after) - calls_before
            queries = scaler.metric("scaler_source_queries_total", snapshot=after) - queries_before
            streams_open = scaler.metric("scaler_push_streams_open", snapshot=after, method="StreamIsActive")
            pollers = scaler.metric("scaler_source_pollers", snapshot=after)
            done = load.next_event("done")
        finally:
            load.stop()

    def cores(before: psutil._common.pcputimes, after: psutil._common.pcputimes) -> float:
        return (after.user + after.system - before.user - before.system) / elapsed

    return Scale(
        cache_ttl=cache_ttl,
        window=elapsed,
        cpu_cores=cores(cpu_before, cpu_after),
        rss_max_mb=rss_max / 2**20,
        rss_start_mb=rss_start / 2**20,
        load_cores=cores(load_before, load_after),
        calls_per_s=calls / elapsed,
        expected_calls_per_s=OBJECTS * (2 / POLL + 1 / HPA),
        errors=int(done["errors"]),  # type: ignore[call-overload]
        stream_errors=int(done["stream_errors"]),  # type: ignore[call-overload]
        streams_reopened=int(done["stream_reopened"]),  # type: ignore[call-overload]
        source_queries_per_s=queries / elapsed,
        streams_open=streams_open,
        pollers=pollers,
        error_samples=list(done["error_samples"]),  # type: ignore[call-overload]
        in_flight_at_end=int(done["in_flight_at_end"]),  # type: ignore[call-overload]
        load_average=load_average,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--cache-ttl", type=float, default=None)
    args = parser.parse_args()
    with standalone_prometheus() as prometheus:
        print_rows(measure(prometheus, args.window, args.cache_ttl).rows())
    return 0


if __name__ == "__main__":
    sys.exit(main())
