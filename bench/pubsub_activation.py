"""Activation latency for gcp-pubsub: first publish into an empty subscription -> StreamIsActive `true`.

In `make bench` (rows()): the peek source only, as bench/activation_trials.py runs trials (20, at the default
push interval, 1 s, and at 0.5 s), against the emulator the bench context starts.
Run as a script it also compares peek with the monitoring source:

Two triggers watch each subscription through the real scaler over a real gRPC channel:
  * peek:        `source: peek` (pull without ack, release at once), polled every push interval;
  * monitoring:  `source: monitoring` only, against a real Prometheus that scrapes an exporter mirroring
                 each subscription's backlog on its own sampling clock, like Cloud Monitoring (60 s
                 samples by default). Cloud Monitoring adds a further ingestion delay of up to minutes
                 (kedacore/keda#6193); it is NOT modelled here, so the monitoring figures are a lower bound.
Trials run concurrently, each publishing at a random moment of the sampling period (a real publish does
not know the sampling phase). Prints p50/p95 for both and their ratio, measured in the same run.

    .venv/bin/python bench/pubsub_activation.py [--trials 40] [--sample-period 60] [--push-interval 1] [--cache-ttl 1]

A peek's latency is bounded by one poll (push interval, cache TTL) plus one peek: those are the knobs.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from google.pubsub_v1 import PubsubMessage  # noqa: E402

from bench.activation_trials import Source, TimedStream, measure  # noqa: E402
from bench.common import Row  # noqa: E402
from tests.fixtures.prometheus import Exporter, start_prometheus  # noqa: E402
from tests.fixtures.pubsub import PROJECT, PubSubEmulator, google_isolated_env, start_emulator  # noqa: E402
from tests.fixtures.scaler import ScalerProcess  # noqa: E402

BACKLOG = "pubsub_googleapis_com:subscription_num_undelivered_messages"


class MonitoringMirror:
    """Cloud Monitoring's role: samples every subscription's backlog once per period, on its own clock."""

    def __init__(self, exporter: Exporter, period: float) -> None:
        self.exporter = exporter
        self.period = period
        self.backlog: dict[str, int] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stop.wait(self.period):
            with self.lock:
                for name, count in self.backlog.items():
                    self.exporter.set(BACKLOG, count, project_id=PROJECT, subscription_id=name)

    def published(self, subscription: str, count: int) -> None:
        with self.lock:
            name = subscription.rsplit("/", 1)[1]
            self.backlog[name] = self.backlog.get(name, 0) + count


def trial(
    scaler: ScalerProcess,
    emulator: PubSubEmulator,
    mirror: MonitoringMirror,
    prometheus_url: str,
    *,
    delay: float,
) -> tuple[float, float]:
    """One subscription, two streams; returns (peek, monitoring) seconds from publish to `true`."""
    topic = emulator.topic("bench")
    subscription = emulator.subscription(topic, "bench-sub")
    peek = {"adapter": "gcp-pubsub", "source": "peek", "subscriptionName": subscription}
    monitoring = {
        "adapter": "gcp-pubsub",
        "source": "monitoring",
        "monitoringAddress": prometheus_url,
        "valueIfNull": "0",  # before its first sample the series is absent
        "subscriptionName": subscription,
    }
    streams = [TimedStream(scaler, peek), TimedStream(scaler, monitoring)]
    try:
        for stream in streams:
            if not stream.first_false.wait(30):
                raise RuntimeError("a stream did not report the empty subscription as inactive")
        time.sleep(delay)
        published_at = time.perf_counter()
        emulator.publish(topic, 1)
        mirror.published(subscription, 1)
        limit = mirror.period * 2 + 30
        for stream in streams:
            if not stream.active.wait(limit):
                raise RuntimeError(f"no activation within {limit:.0f}s")
        return streams[0].active_at - published_at, streams[1].active_at - published_at
    finally:
        for stream in streams:
            stream.cancel()


def measure_peek(emulator: PubSubEmulator, trials: int = 20) -> list[Row]:
    publisher = emulator.publisher  # one client, already connected, shared by the trials' threads

    def new_source() -> Source:
        topic = emulator.topic("bench-activation")
        subscription = emulator.subscription(topic, "bench-activation-sub")

        def cleanup() -> None:
            emulator.subscriber.delete_subscription(subscription=subscription)
            publisher.delete_topic(topic=topic)

        def publish() -> None:
            publisher.publish(topic=topic, messages=[PubsubMessage(data=b"first")])

        return {"adapter": "gcp-pubsub", "source": "peek", "subscriptionName": subscription}, publish, cleanup

    return measure(
        "Activation latency, Pub/Sub peek: first message into an empty subscription -> StreamIsActive true",
        new_source,
        scaler_flags=[],
        trials=trials,
        how="`source: peek` (pull without ack, released at once) against the Pub/Sub emulator",
        env=google_isolated_env(emulator.host),
    )


def rows(context: Any) -> list[Row]:
    return measure_peek(context.service("pubsub"))


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--sample-period", type=float, default=60.0, help="the mirror's sampling period (s)")
    parser.add_argument("--push-interval", type=float, default=1.0, help="the scaler's push_interval (s)")
    parser.add_argument("--cache-ttl", type=float, default=1.0, help="the scaler's cache_ttl (s)")
    args = parser.parse_args()

    emulator = start_emulator()
    exporter = Exporter()
    prometheus = start_prometheus(exporter)  # scrapes every 1 s
    # The poller reads through the cache: a reading is at most max(push interval, cache TTL) old.
    scaler = ScalerProcess(
        ["--push-interval", str(args.push_interval), "--cache-ttl", str(args.cache_ttl)],
        env=google_isolated_env(emulator.host),
    )
    mirror = MonitoringMirror(exporter, args.sample_period)
    results: list[tuple[float, float]] = []
    errors: list[BaseException] = []

    def run(delay: float) -> None:
        try:
            results.append(trial(scaler, emulator, mirror, prometheus.url, delay=delay))
        except BaseException as exc:
            errors.append(exc)

    try:
        started = time.perf_counter()
        threads: list[Any] = [
            threading.Thread(target=run, args=(random.uniform(0, args.sample_period),)) for _ in range(args.trials)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    finally:
        mirror.stop.set()
        scaler.stop()
        prometheus.stop()
        exporter.close()
        emulator.cleanup()

    if errors or not results:
        print(f"{len(errors)} trial(s) failed: {errors[:3]}", file=sys.stderr)
        return 1
    peek = [r[0] for r in results]
    monitoring = [r[1] for r in results]
    print(
        f"gcp-pubsub activation latency, first publish -> StreamIsActive true ({len(results)} trials, {elapsed:.0f}s)"
    )
    print(
        f"  scaler: push interval {args.push_interval:g} s, cache TTL {args.cache_ttl:g} s (defaults: 1 and 1); "
        f"monitoring mirror samples every {args.sample_period:g} s,"
    )
    print("  Prometheus scrapes every 1 s; Cloud Monitoring's extra ingestion delay is not modelled")
    print(f"  {'source':<12}{'p50 s':>10}{'p95 s':>10}{'max s':>10}")
    for name, values in (("peek", peek), ("monitoring", monitoring)):
        print(f"  {name:<12}{statistics.median(values):>10.3f}{percentile(values, 95):>10.3f}{max(values):>10.3f}")
    print(
        f"  ratio monitoring/peek: p50 {statistics.median(monitoring) / statistics.median(peek):.1f}x, "
        f"p95 {percentile(monitoring, 95) / percentile(peek, 95):.1f}x"
    )
    print(f"  peek p95 <= 1 s goal: {'met' if percentile(peek, 95) <= 1.0 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
