"""Soak: KEDA-shaped load on a real scaler against real sources, for a bounded time; not a CI test.

    .venv/bin/python bench/soak.py                 # 300 s, 1,000 RPC/s, 1,000 ScaledObjects, 200 streams
    .venv/bin/python bench/soak.py --seconds 30    # a quick run

Each ScaledObject polls like KEDA: GetMetrics then IsActive with the same ref. Calls are paced open-loop
(a late call is not skipped, it is counted late), so a slow server shows up as latency, not as less load.
200 StreamIsActive streams stay open the whole time while the test flips some sources' values.
Sources are pluggable: `--sources prometheus`, `rabbitmq` (the broker on 127.0.0.1:5672) or
`prometheus,rabbitmq` (ScaledObjects alternate between them); add a class to SOURCES for others.

Reports errors by status, latency percentiles (and the last window's p99 as a ratio of the first
window's: drift), stream messages and stream failures, RSS of the scaler at start and end, and the
source queries the scaler made per RPC (the cache's effect).
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
import psutil
from grpc import aio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scaler._generated import externalscaler_pb2 as pb  # noqa: E402
from scaler._generated import externalscaler_pb2_grpc as pb_grpc  # noqa: E402
from tests.fixtures.prometheus import Exporter, PrometheusServer, start_prometheus  # noqa: E402
from tests.fixtures.rabbitmq import SCALER_CONNECTION_NAME, RabbitBroker  # noqa: E402
from tests.fixtures.scaler import ScalerProcess  # noqa: E402


class Source(Protocol):
    """One kind of source under the soak: starts its service, gives trigger metadata, flips values."""

    name: str

    def start(self, distinct: int) -> None: ...
    def metadata(self, index: int) -> dict[str, str]: ...
    def flip(self, index: int, active: bool) -> None: ...
    def queries_served(self) -> float: ...
    def stop(self) -> None: ...


class PrometheusSource:
    name = "prometheus"

    def __init__(self) -> None:
        self.exporter: Exporter | None = None
        self.server: PrometheusServer | None = None
        self.distinct = 0

    def start(self, distinct: int) -> None:
        self.distinct = distinct
        self.exporter = Exporter()
        for i in range(distinct):
            self.exporter.set("soak_queue_depth", 0, queue=f"q{i}")
        self.server = start_prometheus(self.exporter)
        self.server.wait_for_value(f'soak_queue_depth{{queue="q{distinct - 1}"}}', 0, timeout=30)

    def metadata(self, index: int) -> dict[str, str]:
        assert self.server is not None
        return {
            "adapter": "prometheus",
            "serverAddress": self.server.url,
            "query": f'soak_queue_depth{{queue="q{index % self.distinct}"}}',
            "threshold": "10",
        }

    def flip(self, index: int, active: bool) -> None:
        assert self.exporter is not None
        self.exporter.set("soak_queue_depth", 5 if active else 0, queue=f"q{index % self.distinct}")

    def queries_served(self) -> float:
        assert self.server is not None
        return self.server.query_count()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.exporter is not None:
            self.exporter.close()


class RabbitMQSource:
    """The real broker on 127.0.0.1:5672 (guest), in a vhost of the soak's own, deleted at the end.

    Flips publish or purge on a thread of their own: pika is blocking, and the load generator's event
    loop must keep its pace.
    """

    name = "rabbitmq"

    def __init__(self) -> None:
        self.broker = RabbitBroker("127.0.0.1", 5672, 15672, "guest", "guest", vhost=f"soak-{uuid.uuid4().hex[:8]}")
        self.queues: list[str] = []
        self.flips: queue.Queue[tuple[str, bool] | None] = queue.Queue()
        self.worker = threading.Thread(target=self._flip_queues, daemon=True)

    def start(self, distinct: int) -> None:
        broker = self.broker
        broker.api("PUT", f"vhosts/{broker.vhost}").raise_for_status()
        broker.api("PUT", f"permissions/{broker.vhost}/guest", json={"configure": ".*", "write": ".*", "read": ".*"})
        channel = broker.channel()
        self.queues = [f"soak-q{i}" for i in range(distinct)]
        for name in self.queues:
            channel.queue_declare(name)
        channel.connection.close()
        self.worker.start()

    def metadata(self, index: int) -> dict[str, str]:
        return {
            "adapter": "rabbitmq",
            "host": self.broker.amqp_host(),
            "queueName": self.queues[index % len(self.queues)],
            "mode": "QueueLength",
            "value": "10",
        }

    def flip(self, index: int, active: bool) -> None:
        self.flips.put((self.queues[index % len(self.queues)], active))

    def _flip_queues(self) -> None:
        channel = self.broker.channel()
        while (item := self.flips.get()) is not None:
            name, active = item
            if active:
                for _ in range(5):
                    channel.basic_publish("", name, b"soak")
            else:
                channel.queue_purge(name)
        channel.connection.close()

    def queries_served(self) -> float:
        """AMQP frames the broker received from the scaler (one passive queue.declare per query), as of the
        broker's last statistics sample (every 5 s)."""
        response = self.broker.api("GET", f"vhosts/{self.broker.vhost}/connections")
        response.raise_for_status()
        return sum(
            float(c.get("recv_cnt", 0))
            for c in response.json()
            if str(c.get("client_properties", {}).get("connection_name", "")).startswith(SCALER_CONNECTION_NAME)
        )

    def stop(self) -> None:
        if self.worker.is_alive():
            self.flips.put(None)
            self.worker.join(10)
        self.broker.close_clients()
        self.broker.api("DELETE", f"vhosts/{self.broker.vhost}")


SOURCES: dict[str, Callable[[], Source]] = {"prometheus": PrometheusSource, "rabbitmq": RabbitMQSource}


@dataclass
class Results:
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (started, seconds)
    codes: Counter[str] = field(default_factory=Counter)
    late: int = 0
    stream_messages: int = 0
    stream_failures: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class ScaledObject:
    ref: Any
    metric_name: str


async def keda_poll(stub: Any, obj: ScaledObject, results: Results, limit: asyncio.Semaphore) -> None:
    async with limit:
        for method in ("GetMetrics", "IsActive"):
            started = time.perf_counter()
            try:
                if method == "GetMetrics":
                    request = pb.GetMetricsRequest(scaledObjectRef=obj.ref, metricName=obj.metric_name)
                    await stub.GetMetrics(request, timeout=10)
                else:
                    await stub.IsActive(obj.ref, timeout=10)
                results.codes["OK"] += 1
            except aio.AioRpcError as exc:
                results.codes[exc.code().name] += 1
            results.latencies.append((started, time.perf_counter() - started))


async def hold_stream(stub: Any, obj: ScaledObject, results: Results, stop: asyncio.Event) -> None:
    call = stub.StreamIsActive(obj.ref)
    try:
        async for _ in call:
            results.stream_messages += 1
    except aio.AioRpcError as exc:
        if not (stop.is_set() and exc.code() == grpc.StatusCode.CANCELLED):
            results.stream_failures[exc.code().name] += 1
    except asyncio.CancelledError:
        call.cancel()
        raise
    else:
        if not stop.is_set():
            results.stream_failures["ended early"] += 1


async def drive(args: argparse.Namespace, scaler: ScalerProcess, sources: list[Source], results: Results) -> None:
    channel = aio.insecure_channel(scaler.address)
    stub = pb_grpc.ExternalScalerStub(channel)
    objects = []
    for i in range(args.objects):
        source = sources[i % len(sources)]
        ref = pb.ScaledObjectRef(name=f"worker-{i}", namespace=f"team-{i % 20}", scalerMetadata=source.metadata(i))
        spec = await stub.GetMetricSpec(ref, timeout=10)
        objects.append(ScaledObject(ref, spec.metricSpecs[0].metricName))
    stop = asyncio.Event()
    streams = [
        asyncio.create_task(hold_stream(stub, objects[i * args.objects // args.streams], results, stop))
        for i in range(args.streams)
    ]
    limit = asyncio.Semaphore(args.concurrency)
    interval = 2 / args.rate  # each poll is two RPCs
    polls: set[asyncio.Task[None]] = set()
    begin = time.perf_counter()
    deadline = begin + args.seconds
    next_flip = begin + args.flip_every
    n = 0
    active = False
    while (now := time.perf_counter()) < deadline:
        due = begin + n * interval
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > 0.1:
            results.late += 1
        task = asyncio.create_task(keda_poll(stub, objects[n % len(objects)], results, limit))
        polls.add(task)
        task.add_done_callback(polls.discard)
        n += 1
        if now >= next_flip:
            active = not active
            for i in range(0, args.objects, 10):  # a tenth of the sources change state
                sources[i % len(sources)].flip(i, active)
            next_flip = now + args.flip_every
    await asyncio.gather(*polls)
    stop.set()
    for task in streams:
        task.cancel()
    await asyncio.gather(*streams, return_exceptions=True)
    await channel.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def report(args: argparse.Namespace, results: Results, rss: tuple[int, int], queries: float, wall: float) -> None:
    total = sum(results.codes.values())
    errors = total - results.codes["OK"]
    seconds = [s for _, s in results.latencies]
    window = max(1.0, args.seconds / 10)
    first_start = results.latencies[0][0] if results.latencies else 0.0
    last_start = max((t for t, _ in results.latencies), default=0.0)
    first = [s for t, s in results.latencies if t < first_start + window]
    last = [s for t, s in results.latencies if t > last_start - window]
    ms = 1000
    print(f"soak: {args.seconds:.0f} s, sources {args.sources}, {args.objects} ScaledObjects, {args.streams} streams")
    print(f"  RPCs            {total} ({total / wall:.0f}/s, target {args.rate}/s; {results.late} paced late)")
    print(f"  errors          {errors} {dict(results.codes)}")
    print(
        f"  latency ms      p50 {statistics.median(seconds) * ms:.2f}  p99 {percentile(seconds, 0.99) * ms:.2f}"
        f"  max {max(seconds) * ms:.2f}"
    )
    p99_first, p99_last = percentile(first, 0.99), percentile(last, 0.99)
    print(
        f"  p99 drift       first {window:.0f}s {p99_first * ms:.2f} ms, last {window:.0f}s {p99_last * ms:.2f} ms"
        f" (ratio {p99_last / p99_first:.2f})"
    )
    print(f"  streams         {results.stream_messages} messages, failures {dict(results.stream_failures) or 0}")
    growth = (rss[1] - rss[0]) / rss[0] * 100
    print(f"  scaler RSS      start {rss[0] / 2**20:.1f} MiB, end {rss[1] / 2**20:.1f} MiB ({growth:+.1f} %)")
    print(f"  source queries  {queries:.0f} ({queries / max(total, 1):.4f} per RPC)")


def server_p99(metrics: str) -> float:
    """Upper bound of the p99 of GetMetrics + IsActive from the scaler's request-duration histogram buckets."""
    buckets: Counter[float] = Counter()
    for line in metrics.splitlines():
        if line.startswith("scaler_grpc_request_duration_seconds_bucket{") and (
            'method="GetMetrics"' in line or 'method="IsActive"' in line
        ):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(bound)] += float(line.rsplit(" ", 1)[1])
    total = buckets[float("inf")]
    return next((bound for bound in sorted(buckets) if buckets[bound] >= 0.99 * total), float("nan"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--rate", type=int, default=1000, help="RPCs per second (GetMetrics + IsActive)")
    parser.add_argument("--objects", type=int, default=1000, help="ScaledObjects polled in turn")
    parser.add_argument("--distinct", type=int, default=100, help="distinct sources (queries) behind them")
    parser.add_argument("--streams", type=int, default=200, help="StreamIsActive streams held open")
    parser.add_argument("--concurrency", type=int, default=256, help="most polls in flight at once")
    parser.add_argument("--flip-every", type=float, default=10, help="seconds between source state flips")
    parser.add_argument("--sources", default="prometheus", help=f"comma-separated: {', '.join(SOURCES)}")
    args = parser.parse_args()
    sources = [SOURCES[name.strip()]() for name in args.sources.split(",")]
    scaler: ScalerProcess | None = None
    try:
        for source in sources:
            source.start(args.distinct)
        scaler = ScalerProcess(["--log-level", "WARNING"])
        process = psutil.Process(scaler.proc.pid)
        results = Results()
        # Warm-up (pooled clients, parsed triggers, first readings) is not part of the figures.
        warm = argparse.Namespace(**{**vars(args), "seconds": 5})
        asyncio.run(drive(warm, scaler, sources, Results()))
        rss_start = process.memory_info().rss
        queries_before = sum(source.queries_served() for source in sources)
        started = time.perf_counter()
        asyncio.run(drive(args, scaler, sources, results))
        wall = time.perf_counter() - started
        rss_end = process.memory_info().rss
        queries = sum(source.queries_served() for source in sources) - queries_before
        report(args, results, (rss_start, rss_end), queries, wall)
        print(f"  server-side p99 <= {server_p99(scaler.metrics_text()) * 1000:.1f} ms (scaler's own histogram)")
    finally:
        if scaler is not None:
            scaler.stop()
        for source in sources:
            source.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
