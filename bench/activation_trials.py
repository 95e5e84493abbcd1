"""Activation trials for queue-like sources: first message into an empty source -> StreamIsActive `true`.

Each trial has a source of its own (so a poller of its own), opens StreamIsActive at a random moment (so the
poller's phase is random, as for a real trigger), waits for the first `false`, waits a random part of one
push interval, then puts one message in and times the arrival of `true` at the client. The clock starts
before the publish call, so the publish's own round trip counts against the scaler. Trials run concurrently,
each on its own thread with its own publishing client, already connected.

A poller reads its source once per push interval, so the latency is uniform over one push interval plus one
query: p95 sits near 0.95 x push interval + the query time. Each benchmark runs at the default push
interval (1 s) and at 0.5 s (twice the poller queries for watched sources), one row each.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.common import QUIET, Row, median, percentile
from tests.fixtures.scaler import ScalerProcess, ref

GOAL_SECONDS = 1.0

# A trial's source: (the trigger's metadata, put one message in, clean up).
Source = tuple[dict[str, str], Callable[[], None], Callable[[], None]]


class TimedStream:
    """A StreamIsActive call read on a thread; remembers when the first `true` arrived."""

    def __init__(self, scaler: ScalerProcess, metadata: dict[str, str]) -> None:
        self.call = scaler.stub.StreamIsActive(ref(metadata, name="activation", namespace="bench"))
        self.first_false = threading.Event()
        self.active = threading.Event()
        self.active_at = 0.0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            for message in self.call:
                if message.result and not self.active.is_set():
                    self.active_at = time.perf_counter()
                    self.active.set()
                elif not message.result:
                    self.first_false.set()
        except Exception:
            self.first_false.set()  # cancelled or failed: let waiters go

    def cancel(self) -> None:
        self.call.cancel()


def _trial(scaler: ScalerProcess, new_source: Callable[[], Source], push_interval: float) -> float:
    metadata, publish, cleanup = new_source()
    try:
        time.sleep(random.uniform(0, push_interval))
        stream = TimedStream(scaler, metadata)
        try:
            if not stream.first_false.wait(30) or stream.active.is_set():
                raise RuntimeError("the stream did not report the empty source as inactive")
            time.sleep(random.uniform(0, push_interval))
            published_at = time.perf_counter()
            publish()
            if not stream.active.wait(30):
                raise RuntimeError("no activation within 30 s")
            return stream.active_at - published_at
        finally:
            stream.cancel()
    finally:
        cleanup()


def run_trials(
    scaler: ScalerProcess, new_source: Callable[[], Source], trials: int, push_interval: float
) -> list[float]:
    """Seconds from publish to `true`, one per trial; raises the first trial's failure."""
    results: list[float] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(_trial(scaler, new_source, push_interval))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(trials)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


@dataclass
class Activation:
    what: str
    latencies: list[float]
    push_interval: float
    default_push_interval: float = 1.0
    how: str = ""

    @property
    def p95(self) -> float:
        return percentile(self.latencies, 0.95)

    def row(self) -> Row:
        setting = "default" if self.push_interval == self.default_push_interval else "not the default"
        return Row(
            f"{self.what} (push interval {self.push_interval:g} s, {setting})",
            f"p95 {self.p95 * 1000:.0f} ms, median {median(self.latencies) * 1000:.0f} ms, max "
            f"{max(self.latencies) * 1000:.0f} ms ({self.p95 / self.push_interval:.2f}x the push interval)",
            f"<= {GOAL_SECONDS * 1000:.0f} ms (KEDA polling: up to 30 s)",
            self.p95 <= GOAL_SECONDS,
            f"{len(self.latencies)} concurrent trials, each its own source and poller at a random phase; "
            f"clock from before the publish call to `true` at the client; {self.how}",
        )


def measure(
    what: str,
    new_source: Callable[[], Source],
    *,
    scaler_flags: list[str],
    trials: int = 20,
    how: str = "",
    env: dict[str, str] | None = None,
) -> list[Row]:
    """At the default push interval (1 s) and at 0.5 s, one row each: the second shows the knob's effect."""
    found: list[Activation] = []
    for push_interval in (1.0, 0.5):
        scaler = ScalerProcess([*QUIET, *scaler_flags, "--push-interval", str(push_interval)], env)
        try:
            latencies = run_trials(scaler, new_source, trials, push_interval)
        finally:
            scaler.stop()
        found.append(Activation(what, latencies, push_interval, how=how))
    return [a.row() for a in found]
