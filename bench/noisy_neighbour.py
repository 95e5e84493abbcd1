"""Noisy neighbour: a victim namespace's GetMetrics latency, without and with another namespace's attack.

A real Prometheus sits behind a loopback origin (tests/fixtures/_slow.py, in its own process) that
forwards every /api/v1/query to it and holds the attacker's queries (PromQL naming `noisy_slow`) for
60 s or until the scaler closes the connection. Victim and attacker use that same origin, so they share
its pooled connections. The scaler runs on its defaults, but a cache TTL of 1 µs (every victim call is a
real query). The victim calls GetMetrics one at a time from this process, in blocks of 100, each block
under attack right after a baseline block, 5 rounds of one block per part of the attack and one with all
of them. The attack runs in a process of its own (started per block), in namespaces of its own:

- 32 triggers with a slow query and `timeout: 60000`, each re-sent as soon as it ends (`attacker`);
- 150 StreamIsActive streams on distinct sources, each one poller querying Prometheus every second
  (`attacker-push`; the poller cap refuses the ones beyond it). These go to Prometheus directly, not
  through the slow origin: the origin is a Python stand-in whose own CPU per forwarded request (~100 a
  second) would be measured as the victim's latency, which says nothing about the scaler;
- GetMetrics with ~800 KB of metadata (distinct each call), 10 per second (`attacker-big`).

Each attack block starts once the attack is at full strength and 2 s (two push intervals) later, past the
burst of opening 150 streams. The goal: victim p99 under the whole attack within 1.5x of the baseline p99
(the median over the rounds of each attack block's p99 over the baseline block's before it). For
comparison, the same slow-query attack against a scaler without the per-namespace budget
(`--max-source-queries-per-namespace 16`, the whole pool): the victim's calls, with a 2 s timeout, fail.

    .venv/bin/python bench/noisy_neighbour.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ROOT,
    Row,
    median,
    percentile,
    print_rows,
    prometheus_metadata,
    running_scaler,
    standalone_prometheus,
)
from scaler._generated import externalscaler_pb2 as pb
from scaler._generated import externalscaler_pb2_grpc as pb_grpc
from tests.fixtures._util import wait_for
from tests.fixtures.prometheus import PrometheusServer

GOAL = 1.5
METRIC = "bench_noisy_depth"
SLOW_TRIGGERS = 32
STREAMS = 150
BIG_METADATA = 800 * 1024
BIG_PER_SECOND = 10
TINY_TTL = "0.000001"
BLOCK = 100
SETTLE = 2.0  # seconds: two push intervals


@dataclass
class Attack:
    """The attacker's load, on threads of the attack process; counts every outcome by status code."""

    stub: Any
    origin: str  # the slow origin (the victim's): slow queries and big-metadata calls go here
    prometheus: str  # the real Prometheus behind it: the pollers' queries (see the module's docstring)
    codes: collections.Counter[str] = field(default_factory=collections.Counter)
    streams: list[Any] = field(default_factory=list)
    in_flight: set[Any] = field(default_factory=set)
    parts: tuple[bool, bool, bool] = (False, False, False)
    stopping: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, *, slow: bool, pollers: bool, big: bool) -> None:
        self.parts = (slow, pollers, big)
        for i in range(SLOW_TRIGGERS if slow else 0):
            self._slow(i)
        if pollers:
            for i in range(STREAMS):
                metadata = prometheus_metadata(self.prometheus, f'{METRIC}{{stream="{i}"}}')
                self.streams.append(self.stub.StreamIsActive(_ref(metadata, f"push-{i}", "attacker-push")))
        if big:
            threading.Thread(target=self._big, daemon=True).start()

    def _count(self, code: grpc.StatusCode) -> None:
        with self._lock:
            self.codes[code.name] += 1

    def _slow(self, i: int) -> None:
        if self.stopping.is_set():
            return
        metadata = prometheus_metadata(self.origin, f'sum(up{{job="noisy_slow_{i}"}})', timeout="60000")
        request = pb.GetMetricsRequest(scaledObjectRef=_ref(metadata, f"heavy-{i}", "attacker"), metricName="m")
        call = self.stub.GetMetrics.future(request, timeout=60)
        with self._lock:
            self.in_flight.add(call)

        def done(finished: Any) -> None:
            with self._lock:
                self.in_flight.discard(finished)
            if not self.stopping.is_set():
                self._count(finished.code())
                self._slow(i)  # keep the pressure up: re-send as soon as it ends

        call.add_done_callback(done)

    def _big(self) -> None:
        n = 0
        while not self.stopping.wait(1 / BIG_PER_SECOND):
            n += 1
            padding = f"{n:08d}" + "x" * BIG_METADATA
            metadata = prometheus_metadata(self.origin, f'{METRIC}{{big="1"}}', padding=padding)
            request = pb.GetMetricsRequest(scaledObjectRef=_ref(metadata, f"big-{n}", "attacker-big"), metricName="m")
            try:
                self.stub.GetMetrics(request, timeout=10)
                self._count(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                self._count(exc.code())

    def established(self, pollers_running: Callable[[], float]) -> None:
        """Wait until the attack is at full strength: the origin holds slow queries, the pollers run."""
        slow, pollers, big = self.parts
        if slow:
            wait_for(lambda: origin_stats(self.origin)["holding"] >= 2, 20, "the slow queries to reach the origin")
        if pollers:
            wait_for(lambda: pollers_running() >= 100, 30, "the attacker's pollers")
        if big:
            wait_for(lambda: sum(self.codes.values()) >= 3, 20, "the first big-metadata calls")
        # Past the opening burst (150 streams parsed, 100 first readings, 50 refusals): the figure is the
        # victim's latency while the attack goes on, not in the second it starts.
        time.sleep(SETTLE)

    def refused_streams(self) -> int:
        return sum(1 for call in self.streams if call.done() and call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED)

    def stop(self) -> None:
        self.stopping.set()
        with self._lock:
            calls = [*self.streams, *self.in_flight]
        for call in calls:
            call.cancel()


PHASES = ("slow queries", "pollers", "800 KB metadata", "all three")


def run_attack(address: str, metrics_url: str, origin: str, prometheus: str, parts: str) -> int:
    """The attack process: start the parts asked for, say "ready" at full strength, stop when stdin closes."""
    channel = grpc.insecure_channel(address)
    attack = Attack(pb_grpc.ExternalScalerStub(channel), origin, prometheus)
    attack.start(slow="slow" in parts, pollers="pollers" in parts, big="big" in parts)
    attack.established(lambda: _metric(metrics_url, "scaler_source_pollers"))
    print(json.dumps({"event": "ready"}), flush=True)
    sys.stdin.read()
    refused = attack.refused_streams()
    attack.stop()
    print(json.dumps({"event": "done", "codes": dict(attack.codes), "refused": refused}), flush=True)
    channel.close()
    return 0


def _metric(metrics_url: str, name: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(f"{name} "))


class AttackProcess:
    """run_attack in a process of its own: its threads and serialisation of 800 KB requests must not
    share the GIL with the victim's client, whose latency is the figure."""

    def __init__(self, scaler: Any, origin: str, prometheus: str, parts: str) -> None:
        args = [sys.executable, str(Path(__file__).resolve()), "attack", scaler.address, f"{scaler.http_url}/metrics"]
        self.proc = subprocess.Popen(
            [*args, origin, prometheus, parts], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.parts = parts
        self._expect("ready")

    def _expect(self, event: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            message: dict[str, Any] = json.loads(line)
            if message["event"] == event:
                return message
        raise RuntimeError(f"the attack process exited with {self.proc.wait()} before '{event}'")

    def stop(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        done = self._expect("done")
        self.proc.wait(30)
        return done


@dataclass
class Result:
    baseline: list[float]
    attacked: dict[str, list[float]]  # phase -> victim call seconds under that attack
    attacked_errors: int
    attack_codes: dict[str, int]
    most_held: int
    pollers: float
    refused_streams: int
    unbudgeted_errors: int
    unbudgeted_calls: int
    scaler_cpu: dict[str, float]  # phase (or "baseline") -> the scaler's mean share of one core in its blocks
    # phase -> per round, {0.5: p50 ratio, 0.99: p99 ratio} of its attack block to the baseline block before it
    per_round: dict[str, list[dict[float, float]]]

    def ratio(self, phase: str, fraction: float) -> float:
        """The median of the per-round ratios: a burst of the shared machine's other load spoils one round,
        not the figure (as in grpc_throughput)."""
        return median([ratios[fraction] for ratios in self.per_round[phase]])

    def pooled(self, phase: str, fraction: float) -> float:
        return percentile(self.attacked[phase], fraction) / percentile(self.baseline, fraction)

    def rows(self) -> list[Row]:
        ms = 1000
        every = self.attacked["all three"]
        parts = ", ".join(
            f"{phase} {self.ratio(phase, 0.99):.2f}x p99 / {self.ratio(phase, 0.5):.2f}x p50" for phase in PHASES[:-1]
        )
        cpu = ", ".join(f"{phase} {share:.0%}" for phase, share in self.scaler_cpu.items())
        return [
            Row(
                "Noisy neighbour: victim GetMetrics p99 under another namespace's attack on the same Prometheus",
                f"{self.ratio('all three', 0.99):.2f}x p99, {self.ratio('all three', 0.5):.2f}x p50 (medians of "
                f"{len(self.per_round['all three'])} rounds; all calls pooled: {self.pooled('all three', 0.99):.2f}x "
                f"p99, {percentile(every, 0.99) * ms:.1f} vs {percentile(self.baseline, 0.99) * ms:.1f} ms; p50 "
                f"{median(every) * ms:.1f} vs {median(self.baseline) * ms:.1f} ms)",
                f"<= {GOAL}x p99",
                self.ratio("all three", 0.99) <= GOAL and self.attacked_errors == 0,
                f"{len(every)} victim calls under the whole attack, {len(self.baseline)} baseline, in alternating "
                f"blocks of {BLOCK}; {self.attacked_errors} victim calls failed; each part alone: {parts}; attack: "
                f"{SLOW_TRIGGERS} slow triggers (at the end of a victim block the origin held at most "
                f"{self.most_held}), "
                f"{STREAMS} push streams ({self.pollers:.0f} pollers ran, {self.refused_streams} refused), "
                f"{BIG_PER_SECOND}/s calls with {BIG_METADATA // 1024} KB metadata; attacker outcomes "
                f"{dict(sorted(self.attack_codes.items()))}; without the per-namespace budget "
                f"(--max-source-queries-per-namespace 16) {self.unbudgeted_errors} of "
                f"{self.unbudgeted_calls} victim calls failed under the slow queries alone; the scaler's CPU "
                f"(share of one core) in the blocks: {cpu}",
            )
        ]


def _ref(metadata: dict[str, str], name: str, namespace: str) -> Any:
    return pb.ScaledObjectRef(name=name, namespace=namespace, scalerMetadata=metadata)


@contextmanager
def slow_origin(upstream: str) -> Iterator[str]:
    """tests/fixtures/_slow.py in a process of its own (its threads must not share this one's GIL): its URL."""
    code = (
        "import sys, time; from tests.fixtures._slow import SlowPrometheus; "
        f"s = SlowPrometheus(marker='noisy_slow', hold=60, upstream={upstream!r}); print(s.url, flush=True); "
        "sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.kill()
        proc.wait(10)


def origin_stats(origin: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{origin}/stats", timeout=5) as response:
        stats: dict[str, int] = json.loads(response.read())
        return stats


def victim_calls(stub: Any, metadata: dict[str, str], calls: int, timeout: float = 10) -> tuple[list[float], int]:
    """Sequential GetMetrics from the victim's namespace: the seconds of each call, and how many failed."""
    times, errors = [], 0
    request = pb.GetMetricsRequest(scaledObjectRef=_ref(metadata, "web", "victim"), metricName="m")
    for _ in range(calls):
        started = time.perf_counter()
        try:
            stub.GetMetrics(request, timeout=timeout)
        except grpc.RpcError:
            errors += 1
        times.append(time.perf_counter() - started)
    return times, errors


def measure(prometheus: PrometheusServer, rounds: int = 5) -> Result:
    assert prometheus.exporter is not None
    prometheus.exporter.set(METRIC, 4, victim="1")
    prometheus.wait_for_value(f'{METRIC}{{victim="1"}}', 4)
    baseline: list[float] = []
    attacked: dict[str, list[float]] = {phase: [] for phase in PHASES}
    cpu: dict[str, list[float]] = {phase: [] for phase in ("baseline", *PHASES)}
    codes: collections.Counter[str] = collections.Counter()
    held: list[int] = []
    per_round: dict[str, list[dict[float, float]]] = {phase: [] for phase in PHASES}
    errors = refused = 0
    pollers = 0.0
    with slow_origin(prometheus.url) as origin:
        victim = prometheus_metadata(origin, f'{METRIC}{{victim="1"}}', timeout="2000")
        with running_scaler("--cache-ttl", TINY_TTL) as scaler:
            stub = pb_grpc.ExternalScalerStub(scaler.channel)
            process = psutil.Process(scaler.proc.pid)
            victim_calls(stub, victim, 20)  # warm: parse cache, pooled connection
            for _ in range(rounds):
                for phase in PHASES:
                    with cpu_share(process, cpu["baseline"]):
                        before = victim_calls(stub, victim, BLOCK)[0]
                    baseline += before
                    parts = {"slow queries": "slow", "pollers": "pollers", "800 KB metadata": "big"}
                    attack = AttackProcess(scaler, origin, prometheus.url, parts.get(phase, "slow,pollers,big"))
                    with cpu_share(process, cpu[phase]):
                        times, failed = victim_calls(stub, victim, BLOCK)
                    attacked[phase] += times
                    per_round[phase].append({f: percentile(times, f) / percentile(before, f) for f in (0.5, 0.99)})
                    errors += failed
                    if "slow" in attack.parts:  # how many slow queries the origin held while the victim was measured
                        held.append(origin_stats(origin)["holding"])
                    if phase == "all three":
                        pollers = scaler.metric("scaler_source_pollers")
                    done = attack.stop()
                    codes.update(done["codes"])
                    refused = max(refused, done["refused"])
                    wait_for(lambda: origin_stats(origin)["holding"] == 0, 30, "the attack's slow queries to end")
                    wait_for(lambda: scaler.metric("scaler_source_pollers") == 0, 30, "the attack's pollers to stop")
        unbudgeted_calls = 5
        with running_scaler("--cache-ttl", TINY_TTL, "--max-source-queries-per-namespace", "16") as scaler:
            stub = pb_grpc.ExternalScalerStub(scaler.channel)
            victim_calls(stub, victim, 5)
            attack = AttackProcess(scaler, origin, prometheus.url, "slow")
            wait_for(lambda: origin_stats(origin)["holding"] >= 16, 20, "the slow queries to fill the pool")
            _, unbudgeted_errors = victim_calls(stub, victim, unbudgeted_calls, timeout=5)
            attack.stop()
    shares = {phase: sum(values) / len(values) for phase, values in cpu.items()}
    return Result(
        baseline,
        attacked,
        errors,
        dict(codes),
        max(held),
        pollers,
        refused,
        unbudgeted_errors,
        unbudgeted_calls,
        shares,
        per_round,
    )


@contextmanager
def cpu_share(process: psutil.Process, shares: list[float]) -> Iterator[None]:
    """Appends the share of one core the scaler used during the block (its CPU seconds / wall seconds)."""
    before, started = process.cpu_times(), time.perf_counter()
    yield
    after = process.cpu_times()
    shares.append((after.user + after.system - before.user - before.system) / (time.perf_counter() - started))


def rows(context: Any) -> list[Row]:
    return measure(context.prometheus).rows()


def main() -> int:
    if sys.argv[1:2] == ["attack"]:
        return run_attack(*sys.argv[2:7])
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with standalone_prometheus() as prometheus:
        result = measure(prometheus, args.rounds)
    print_rows(result.rows())
    for phase in PHASES:
        rounds = ", ".join(f"{ratios[0.99]:.2f}" for ratios in result.per_round[phase])
        print(
            f"{phase}: p50 ratio {result.ratio(phase, 0.5):.2f}x, p99 ratio {result.ratio(phase, 0.99):.2f}x "
            f"(per round p99: {rounds}; pooled {result.pooled(phase, 0.99):.2f}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
