"""The cluster shape (bench/cluster_scale.py) over 1, 2 and 3 replicas behind one round_robin client, and a
scale-up run: one replica, a second one added mid-run, and the time until it serves >= 40 % of the calls.

Each replica is its own `python -m scaler serve` on its own loopback address (127.0.0.2, .3, .4; one port),
found through a scripted DNS server (tests/fixtures/dns.py) by grpc's `dns:` resolver with its default 30 s
between resolutions (grpc-go's too), as KEDA finds the pods of a headless Service. Each replica reads each
source itself: source queries add up over replicas. These machines have 2 cores shared by the load
generator, Prometheus and the replicas: the figures that carry over are shares and CPU per call served.

    .venv/bin/python bench/replicas_scale.py [--window 30] [--replicas 1,2,3] [--scale-up]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.cluster_scale import POLL, cluster_load, prepare
from bench.common import QUIET, LoadGenerator, Row, print_rows, standalone_prometheus
from scaler.settings import Settings
from tests.fixtures._replicas import SERVICE_NAME, Replica, common_port, replica_hosts, round_robin_target
from tests.fixtures.dns import ScriptedDns
from tests.fixtures.prometheus import PrometheusServer

DEFAULT_TTL: float = Settings.model_fields["cache_ttl"].default  # the server's default, as the issue asks

CPU_PER_CALL_GOAL_MS = 0.75
SCALE_UP_SHARE = 0.4
UNARY = ("GetMetrics", "IsActive", "GetMetricSpec")


@dataclass
class ReplicaFigures:
    calls: float  # unary calls answered (any code) in the window
    cpu_seconds: float
    queries: float  # source queries started in the window


@dataclass
class Spread:
    replicas: list[ReplicaFigures]
    window: float
    cache_ttl: float
    errors: int
    error_samples: list[str]

    def rows(self) -> list[Row]:
        calls = sum(r.calls for r in self.replicas)
        cpu = sum(r.cpu_seconds for r in self.replicas)
        per_call_ms = cpu / calls * 1000 if calls else float("nan")
        shares = " / ".join(f"{r.calls / calls:.0%}" for r in self.replicas) if calls else "-"
        cores = " + ".join(f"{r.cpu_seconds / self.window:.2f}" for r in self.replicas)
        per_ttl = [r.queries / self.window * self.cache_ttl for r in self.replicas]
        n = len(self.replicas)
        return [
            Row(
                f"Cluster shape over {n} replica{'s' if n > 1 else ''} (round_robin client): CPU per call served",
                f"{per_call_ms:.2f} ms; shares {shares}; CPU {cores} core",
                f"<= {CPU_PER_CALL_GOAL_MS} ms",
                per_call_ms <= CPU_PER_CALL_GOAL_MS and self.errors == 0,
                f"{self.errors} failed calls; source queries per TTL ({self.cache_ttl:g} s): "
                f"{' + '.join(f'{q:.0f}' for q in per_ttl)} = {sum(per_ttl):.0f} (each replica reads each source "
                f"itself); {self.window:.0f} s window after {POLL:.0f} s warm-up"
                + (f"; first error: {self.error_samples[0][:160]}" if self.error_samples else ""),
            )
        ]


@dataclass
class ScaleUp:
    seconds_to_share: float | None  # None: never within the run
    age: float
    share_after: float

    def rows(self) -> list[Row]:
        reached = "not reached" if self.seconds_to_share is None else f"{self.seconds_to_share:.0f} s"
        return [
            Row(
                f"Scale-up: a second replica added mid-run, time until it serves >= {SCALE_UP_SHARE:.0%} of calls",
                f"{reached} (max_connection_age {self.age:g} s; its share over the last 10 s {self.share_after:.0%})",
                f"<= {self.age + 30:.0f} s (one age + grpc's 30 s DNS rate limit)",
                self.seconds_to_share is not None and self.seconds_to_share <= self.age + 30,
                "the cluster shape's load on one round_robin client; the replica is added after the warm-up "
                "(no failed call across rotations: tests/test_scale_out.py)",
            )
        ]


def scrape(replica: Replica) -> tuple[float, float]:
    """(unary calls answered, source queries started), from one /metrics read: under this load a scrape of a
    busy replica can take seconds."""
    text = httpx.get(f"{replica.http_url}/metrics", timeout=60).text
    calls = sum(replica.metric("scaler_grpc_requests_total", snapshot=text, method=m) for m in UNARY)
    return calls, replica.metric("scaler_source_queries_total", snapshot=text)


def unary_calls(replica: Replica) -> float:
    return scrape(replica)[0]


@contextlib.contextmanager
def replica_set(count: int, *flags: str) -> Iterator[tuple[ScriptedDns, list[Replica], int]]:
    hosts = replica_hosts(3)
    port = common_port(hosts)
    dns = ScriptedDns()
    replicas: list[Replica] = []
    try:
        replicas += [Replica(host, port, [*QUIET, *flags]) for host in hosts[:count]]
        dns.answer(SERVICE_NAME, hosts[:count])
        yield dns, replicas, port
    finally:
        for replica in replicas:
            replica.stop()
        dns.close()


def replicas_load(dns: ScriptedDns, port: int, prometheus: PrometheusServer, duration: float) -> LoadGenerator:
    return cluster_load(round_robin_target(dns, port), prometheus, duration, round_robin=True)


def measure(prometheus: PrometheusServer, count: int, window: float = 30.0, cache_ttl: float = DEFAULT_TTL) -> Spread:
    prepare(prometheus)
    with replica_set(count, "--cache-ttl", str(cache_ttl)) as (dns, replicas, port):
        load = replicas_load(dns, port, prometheus, window + 2)
        try:
            load.next_event("warm")
            processes = [psutil.Process(r.proc.pid) for r in replicas]
            before = [scrape(r) for r in replicas]
            cpu_before = [sum(p.cpu_times()[:2]) for p in processes]
            started = time.monotonic()
            time.sleep(window)
            elapsed = time.monotonic() - started
            cpu_after = [sum(p.cpu_times()[:2]) for p in processes]
            after = [scrape(r) for r in replicas]
            done = load.next_event("done")
        finally:
            load.stop()
    figures = [
        ReplicaFigures(a[0] - b[0], ca - cb, a[1] - b[1])
        for a, b, ca, cb in zip(after, before, cpu_after, cpu_before, strict=True)
    ]
    errors = int(done["errors"])  # type: ignore[call-overload]
    return Spread(figures, elapsed, cache_ttl, errors, list(done["error_samples"]))  # type: ignore[call-overload]


def scale_up(prometheus: PrometheusServer, age: float = 60.0, limit: float = 150.0) -> ScaleUp:
    """One replica under the cluster load; after the warm-up a second one starts and joins the DNS answer."""
    prepare(prometheus)
    with replica_set(1) as (dns, replicas, port):
        load = replicas_load(dns, port, prometheus, limit + 10)
        try:
            load.next_event("warm")
            host = replica_hosts(2)[1]
            replicas.append(Replica(host, port, QUIET))
            dns.answer(SERVICE_NAME, replica_hosts(2))
            added = time.monotonic()
            reached: float | None = None
            history: list[tuple[float, float, float]] = []  # (t, calls of the first, calls of the second)
            while time.monotonic() - added < limit:
                history.append((time.monotonic() - added, unary_calls(replicas[0]), unary_calls(replicas[1])))
                if len(history) >= 3:  # share over the last ~2 s
                    _, a0, b0 = history[-3]
                    _, a1, b1 = history[-1]
                    total = (a1 - a0) + (b1 - b0)
                    if reached is None and total and (b1 - b0) / total >= SCALE_UP_SHARE:
                        reached = history[-1][0]
                    if reached is not None and history[-1][0] - reached >= 10:
                        break
                time.sleep(1.0)
            _, a_end, b_end = history[-1]
            mark = next((h for h in history if h[0] >= history[-1][0] - 10), history[0])
            total = (a_end - mark[1]) + (b_end - mark[2])
            share = (b_end - mark[2]) / total if total else 0.0
        finally:
            load.stop()
    return ScaleUp(reached, age, share)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--replicas", default="1,2,3")
    parser.add_argument("--scale-up", action="store_true")
    args = parser.parse_args()
    with standalone_prometheus() as prometheus:
        if args.scale_up:
            print_rows(scale_up(prometheus).rows())
        for count in (int(c) for c in args.replicas.split(",") if c):
            print_rows(measure(prometheus, count, args.window).rows())
    return 0


if __name__ == "__main__":
    sys.exit(main())
