"""RabbitMQ at scale through the scaler: AMQP connections held, and fan-in of many ScaledObjects on one queue.

Connections: 1,000 ScaledObjects over 10 queues (100 each, each ScaledObject with its own name and target)
on one broker each make KEDA's calls (GetMetrics, then IsActive); the broker's management API then lists
its connections (/api/connections) and the ones named by this scaler process are counted. Goal: 1.
Baseline: KEDA's built-in rabbitmq scaler holds one AMQP connection per ScaledObject (1,000).

Fan-in: 1, 100 and 1,000 ScaledObjects poll one queue concurrently. Each does what KEDA does for one
external trigger every pollingInterval: GetMetrics, then IsActive with the same ref, over one shared
grpc.aio channel (KEDA shares one per scaler address). Reported per size: polls made, source queries the
scaler sent to RabbitMQ (its own scaler_source_queries_total), queries per cache TTL (goal: 1), and the
AMQP connections held. Baseline, from the same polls: KEDA's built-in scaler, one broker query per
ScaledObject per poll.

The scaler runs as users run it (`python -m scaler serve`) against a real broker: the one on
127.0.0.1:5672 when it is up (in a vhost of this run's own, deleted at the end with its queues), else a
node started here.

    .venv/bin/python bench/rabbitmq_fanin.py [--seconds 6] [--interval 1] [--sizes 1,100,1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import QUIET, Row, print_rows
from scaler._generated import externalscaler_pb2 as pb
from scaler._generated import externalscaler_pb2_grpc as pb_grpc
from tests.fixtures._util import port_open, wait_for
from tests.fixtures.rabbitmq import SCALER_CONNECTION_NAME, RabbitBroker, RabbitNode
from tests.fixtures.scaler import ScalerProcess

CACHE_TTL = 1.0  # the scaler's default


# --- the broker ---------------------------------------------------------------------------------------


def start_broker() -> tuple[RabbitBroker, RabbitNode | None]:
    """The broker on 127.0.0.1:5672 (or a node of our own), with a vhost of this run's own."""
    if port_open(5672) and port_open(15672):
        broker, node = RabbitBroker("127.0.0.1", 5672, 15672, "guest", "guest"), None
    else:
        node = RabbitNode()
        node.start()
        broker = RabbitBroker("127.0.0.1", node.amqp_port, node.management_port, "guest", "guest", node=node)
    broker.vhost = f"scaler-bench-{uuid.uuid4().hex[:8]}"
    broker.api("PUT", f"vhosts/{broker.vhost}").raise_for_status()
    broker.api(
        "PUT", f"permissions/{broker.vhost}/guest", json={"configure": ".*", "write": ".*", "read": ".*"}
    ).raise_for_status()
    return broker, node


def stop_broker(broker: RabbitBroker, node: RabbitNode | None) -> None:
    broker.close_clients()
    with contextlib.suppress(Exception):
        broker.api("DELETE", f"vhosts/{quote(broker.vhost, safe='')}")  # and every queue in it
    if node is not None:
        node.stop()


@contextlib.contextmanager
def running_broker() -> Iterator[RabbitBroker]:
    """start_broker() for the length of a `with`, then stop_broker()."""
    broker, node = start_broker()
    try:
        yield broker
    finally:
        stop_broker(broker, node)


def delete_queues(broker: RabbitBroker, queues: list[str]) -> None:
    for queue in queues:
        broker.api("DELETE", f"queues/{quote(broker.vhost, safe='')}/{quote(queue, safe='')}")


def scaler_connections(broker: RabbitBroker, pid: int) -> list[dict[str, Any]]:
    """Every AMQP connection on the broker (any vhost) that names itself as scaler process `pid`."""
    response = broker.api("GET", "connections")
    response.raise_for_status()
    return [
        c
        for c in response.json()
        if str(c.get("client_properties", {}).get("connection_name", "")).startswith(SCALER_CONNECTION_NAME)
        and str(c["client_properties"]["connection_name"]).endswith(f"/{pid}")
    ]


def queue_metadata(broker: RabbitBroker, queue: str, value: str = "10") -> dict[str, str]:
    return {
        "scalerAddress": "bench",
        "adapter": "rabbitmq",
        "host": broker.amqp_host(),
        "queueName": queue,
        "mode": "QueueLength",
        "value": value,
    }


# --- connections held: 1,000 ScaledObjects over 10 queues ------------------------------------------------


@dataclass
class Connections:
    objects: int
    queues: int
    connections: int
    correct_replies: int
    queries: float

    def rows(self) -> list[Row]:
        return [
            Row(
                "Broker connections held (RabbitMQ AMQP), 1,000 ScaledObjects over 10 queues on one broker",
                f"{self.connections} (KEDA's built-in scaler: {self.objects:,}, one per ScaledObject)",
                "1",
                self.connections == 1 and self.correct_replies == self.objects,
                f"{self.objects:,} ScaledObjects ({self.objects // self.queues} per queue, each its own name and "
                f"target) each called GetMetrics + IsActive; {self.correct_replies:,} of {self.objects:,} readings "
                f"equal the queue's depth; {self.queries:.0f} source queries; counted in the broker's "
                "/api/connections by the scaler's connection name and pid",
            )
        ]


async def _poll_all(address: str, refs: list[tuple[Any, int]]) -> int:
    """GetMetrics + IsActive for every ScaledObject, 100 in flight; returns how many read the expected depth."""
    gate = asyncio.Semaphore(100)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.ExternalScalerStub(channel)

        async def one(ref: Any, expected: int) -> bool:
            async with gate:
                reply = await stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref, metricName="q"), timeout=30)
                await stub.IsActive(ref, timeout=30)
                return int(reply.metricValues[0].metricValueFloat) == expected

        return sum(await asyncio.gather(*(one(ref, expected) for ref, expected in refs)))


def measure_connections(broker: RabbitBroker, objects: int = 1000, queues: int = 10) -> Connections:
    names = [broker.declare("bench-conns") for _ in range(queues)]
    try:
        for depth, queue in enumerate(names, start=1):
            broker.publish(queue, depth)  # a different depth per queue, so a reading proves its queue
        refs = [
            (
                pb.ScaledObjectRef(
                    name=f"conns-{i}",
                    namespace=f"bench-{i % 7}",
                    scalerMetadata=queue_metadata(broker, names[i % queues], value=str(5 + i % 50)),
                ),
                i % queues + 1,
            )
            for i in range(objects)
        ]
        scaler = ScalerProcess(QUIET)
        try:
            correct = asyncio.run(_poll_all(scaler.address, refs))
            held = wait_for(lambda: scaler_connections(broker, scaler.proc.pid), 10, "the scaler's connection")
            queries = scaler.metric("scaler_source_queries_total", adapter="rabbitmq")
        finally:
            scaler.stop()
    finally:
        delete_queues(broker, names)
    return Connections(objects, queues, len(held), correct, queries)


# --- fan-in: 1 / 100 / 1,000 ScaledObjects on one queue --------------------------------------------------


@dataclass
class FanInSize:
    size: int
    polls: int
    elapsed: float
    queries: float
    connections: int
    p50_ms: float
    p99_ms: float

    @property
    def ttls(self) -> float:
        return self.elapsed / CACHE_TTL

    @property
    def windows(self) -> int:
        """TTL windows the polls spanned: at most one query may start in each."""
        return math.ceil(self.ttls)

    def row(self, interval: float) -> Row:
        keda = self.polls  # KEDA's built-in scaler: one broker query per ScaledObject per poll
        return Row(
            f"RabbitMQ fan-in: source queries per TTL, {self.size:,} ScaledObject{'s' if self.size > 1 else ''} "
            "on one queue",
            f"{self.queries / self.ttls:.2f} ({self.queries:.0f} queries over {self.ttls:.1f} TTLs; "
            f"KEDA's built-in scaler: {keda:,}, {keda / max(self.queries, 1):,.0f}x more); "
            f"{self.connections} AMQP connection",
            "1 per TTL, 1 connection",
            self.queries <= self.windows and self.connections == 1,
            f"{self.polls:,} polls (GetMetrics + IsActive every {interval:g} s per ScaledObject) in "
            f"{self.elapsed:.1f} s, cache TTL {CACHE_TTL:g} s; poll p50 {self.p50_ms:.1f} ms, "
            f"p99 {self.p99_ms:.1f} ms",
        )


async def _scaled_object(
    stub: Any, metadata: dict[str, str], name: str, *, interval: float, until: float, latencies: list[float]
) -> int:
    """One ScaledObject's polling loop; returns how many polls it completed."""
    ref = pb.ScaledObjectRef(name=name, namespace="bench", scalerMetadata=metadata)
    request = pb.GetMetricsRequest(scaledObjectRef=ref, metricName="rabbitmq-bench")
    polls = 0
    # Spread the first polls over one interval, as ScaledObjects created over time would be.
    await asyncio.sleep((hash(name) % 1000) / 1000 * interval)
    while time.monotonic() < until:
        started = time.perf_counter()
        await stub.GetMetrics(request, timeout=30)
        await stub.IsActive(ref, timeout=30)
        latencies.append(time.perf_counter() - started)
        polls += 1
        await asyncio.sleep(max(0.0, interval - (time.perf_counter() - started)))
    return polls


async def _run_size(
    scaler: ScalerProcess, broker: RabbitBroker, metadata: dict[str, str], *, size: int, seconds: float, interval: float
) -> FanInSize:
    queries_before = scaler.metric("scaler_source_queries_total", adapter="rabbitmq")
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(scaler.address) as channel:
        stub = pb_grpc.ExternalScalerStub(channel)
        started = time.monotonic()
        until = started + seconds
        polls = await asyncio.gather(
            *(
                _scaled_object(stub, metadata, f"so-{size}-{i}", interval=interval, until=until, latencies=latencies)
                for i in range(size)
            )
        )
        elapsed = time.monotonic() - started
    queries = scaler.metric("scaler_source_queries_total", adapter="rabbitmq") - queries_before
    connections = len(wait_for(lambda: scaler_connections(broker, scaler.proc.pid), 10, "the scaler's connection"))
    latencies.sort()
    return FanInSize(
        size=size,
        polls=sum(polls),
        elapsed=elapsed,
        queries=queries,
        connections=connections,
        p50_ms=statistics.median(latencies) * 1000,
        p99_ms=latencies[max(0, math.ceil(len(latencies) * 0.99) - 1)] * 1000,
    )


def measure_fanin(
    broker: RabbitBroker, sizes: tuple[int, ...] = (1, 100, 1000), seconds: float = 6.0, interval: float = 1.0
) -> list[FanInSize]:
    queue = broker.declare("bench-fanin")
    scaler = ScalerProcess([*QUIET, "--cache-ttl", str(CACHE_TTL)])
    try:
        broker.publish(queue, 42)
        metadata = queue_metadata(broker, queue)
        return [
            asyncio.run(_run_size(scaler, broker, metadata, size=n, seconds=seconds, interval=interval)) for n in sizes
        ]
    finally:
        scaler.stop()
        delete_queues(broker, [queue])


def rows(context: Any) -> list[Row]:
    broker: RabbitBroker = context.service("rabbitmq")
    interval = 1.0
    found = measure_connections(broker).rows()
    found += [size.row(interval) for size in measure_fanin(broker, interval=interval)]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="how long each size polls")
    parser.add_argument("--interval", type=float, default=1.0, help="each ScaledObject's polling interval (s)")
    parser.add_argument("--sizes", default="1,100,1000", help="numbers of ScaledObjects, comma-separated")
    args = parser.parse_args()
    with running_broker() as broker:
        found = measure_connections(broker).rows()
        sizes = tuple(int(s) for s in args.sizes.split(","))
        found += [s.row(args.interval) for s in measure_fanin(broker, sizes, args.seconds, args.interval)]
    print_rows(found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
