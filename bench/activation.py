"""Activation latency, Prometheus: the sample's scrape time -> StreamIsActive `true` (p95 of 20 trials, goal <= 1 s).

Prometheus scrapes the exporter every second (tests/fixtures/prometheus.py). Each trial opens a
StreamIsActive on its own series at a random moment (a new poller, so its phase against the scrapes is
random; value 0, so the stream first says `false`), then, at a random moment, sets the exporter's value to 1
and waits for `true`. Afterwards the sample timestamps are read back from
Prometheus: the first sample with value 1 carries the time Prometheus scraped it, and latency is counted
from there (what the scaler can influence), and also from the exporter change (what a user sees).

    .venv/bin/python bench/activation.py [--trials 20]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpc import aio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Row, median, percentile, print_rows, prometheus_metadata, running_scaler, standalone_prometheus
from scaler._generated import externalscaler_pb2 as pb
from scaler._generated import externalscaler_pb2_grpc as pb_grpc
from tests.fixtures.prometheus import PrometheusServer

METRIC = "bench_activation"
GOAL_SECONDS = 1.0
SCRAPE_INTERVAL = 1.0  # start_prometheus's scrape_interval


@dataclass
class Activation:
    from_scrape: list[float]
    from_change: list[float]
    push_interval: float

    def rows(self) -> list[Row]:
        p95 = percentile(self.from_scrape, 0.95)
        return [
            Row(
                "Activation latency, Prometheus: sample's scrape time -> StreamIsActive true",
                f"p95 {p95 * 1000:.0f} ms, median {median(self.from_scrape) * 1000:.0f} ms "
                f"({p95 / self.push_interval:.2f}x the push interval)",
                f"<= {GOAL_SECONDS * 1000:.0f} ms (KEDA polling: up to 30 s)",
                p95 <= GOAL_SECONDS,
                f"{len(self.from_scrape)} trials; scrape_interval {SCRAPE_INTERVAL:g} s, push interval "
                f"{self.push_interval:g} s; from the exporter's change: p95 "
                f"{percentile(self.from_change, 0.95) * 1000:.0f} ms (adds up to one scrape interval)",
            )
        ]


async def _trial(prometheus: PrometheusServer, stub: Any, query: str, labels: dict[str, str]) -> tuple[float, float]:
    """One stream on its own series: open it at a random moment (so its poller's phase against the scrapes
    is random, as for a real trigger), wait for `false`, flip the value at a random moment, wait for `true`."""
    exporter = prometheus.exporter
    assert exporter is not None
    await asyncio.sleep(random.uniform(0, SCRAPE_INTERVAL))
    metadata = prometheus_metadata(prometheus.url, query, activationThreshold="0")
    call = stub.StreamIsActive(pb.ScaledObjectRef(name="activation", scalerMetadata=metadata))
    try:
        first = await asyncio.wait_for(call.read(), 15)
        assert first.result is False, f"{query}: the stream's first message should be false"
        await asyncio.sleep(random.uniform(0, SCRAPE_INTERVAL))
        changed = time.time()
        exporter.set(METRIC, 1, **labels)
        second = await asyncio.wait_for(call.read(), 15)
        activated = time.time()
        assert second.result is True, f"{query}: expected true after the change"
    finally:
        call.cancel()
    return changed, activated


async def _trials(prometheus: PrometheusServer, address: str, trials: int) -> tuple[list[float], list[float]]:
    exporter = prometheus.exporter
    assert exporter is not None
    run = f"{random.getrandbits(32):08x}"  # fresh series each run
    labels = [{"run": run, "trial": str(k)} for k in range(trials)]
    queries = [f'{METRIC}{{run="{run}",trial="{k}"}}' for k in range(trials)]
    for k in range(trials):
        exporter.set(METRIC, 0, **labels[k])
    for query in queries:
        await asyncio.to_thread(prometheus.wait_for_value, query, 0)
    async with aio.insecure_channel(address) as channel:
        stub = pb_grpc.ExternalScalerStub(channel)
        times = [await _trial(prometheus, stub, queries[k], labels[k]) for k in range(trials)]
    from_scrape = []
    for (_, activated), query in zip(times, queries, strict=True):
        samples = (await asyncio.to_thread(prometheus.query, f"{query}[2m]"))[0]["values"]
        scraped_at = next(float(ts) for ts, value in samples if float(value) == 1)  # type: ignore[attr-defined]
        from_scrape.append(activated - scraped_at)
    for k in range(trials):
        exporter.remove(METRIC, **labels[k])
    return from_scrape, [activated - changed for changed, activated in times]


def measure(prometheus: PrometheusServer, trials: int = 20, push_interval: float = 1.0) -> Activation:
    with running_scaler("--push-interval", str(push_interval)) as scaler:
        from_scrape, from_change = asyncio.run(_trials(prometheus, scaler.address, trials))
    return Activation(from_scrape, from_change, push_interval)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    with standalone_prometheus() as prometheus:
        result = measure(prometheus, args.trials)
        print_rows(result.rows())
        print("from scrape (ms):", sorted(round(x * 1000) for x in result.from_scrape))
    return 0


if __name__ == "__main__":
    sys.exit(main())
