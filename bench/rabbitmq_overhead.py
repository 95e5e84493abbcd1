"""Adapter overhead, RabbitMQ: one reading through the scaler vs the same passive queue.declare made with aiormq.

The scaler runs with a cache TTL of 1 µs, so every GetMetrics is a real query (QueueLength over AMQP: the
adapter's passive queue.declare on its pooled connection), checked by its source-query counter. The direct
path is what a hand-written client would do: one aiormq connection and channel kept open, a passive
queue.declare per reading. Calls alternate in blocks, one at a time, from this process; the ratio of
medians is the figure (goal <= 1.3x), as bench/adapter_overhead.py does for Prometheus. A third path in the
same blocks, GetMetrics to bench/bare_server.py (grpc.aio answering a constant), prices the gRPC hop alone,
so the note splits the scaler's time into the hop and the rest (engine + adapter + query).

    .venv/bin/python bench/rabbitmq_overhead.py [--calls 300]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiormq
from grpc import aio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Row, bare_server, median, percentile, print_rows, running_scaler, time_in_alternating_blocks
from bench.rabbitmq_fanin import delete_queues, queue_metadata, running_broker
from scaler._generated import externalscaler_pb2 as pb
from scaler._generated import externalscaler_pb2_grpc as pb_grpc
from tests.fixtures.rabbitmq import RabbitBroker

GOAL = 1.3
BLOCK = 25
DEPTH = 3


@dataclass
class Overhead:
    scaler: list[float]
    direct: list[float]
    hop: list[float]
    queries_per_call: float

    @property
    def ratio(self) -> float:
        return median(self.scaler) / median(self.direct)

    def rows(self) -> list[Row]:
        return [
            Row(
                "Adapter overhead: one RabbitMQ reading (AMQP) through the scaler vs direct aiormq",
                f"{self.ratio:.2f}x ({median(self.scaler) * 1000:.2f} vs {median(self.direct) * 1000:.2f} ms median)",
                f"<= {GOAL}x",
                self.ratio <= GOAL and self.queries_per_call >= 0.99,
                f"{len(self.scaler)} sequential calls each, alternating blocks of {BLOCK}; p90 "
                f"{percentile(self.scaler, 0.9) * 1000:.2f} vs {percentile(self.direct, 0.9) * 1000:.2f} ms; "
                f"{self.queries_per_call:.2f} broker queries per scaler call (every call a real passive "
                "queue.declare); direct: one open aiormq connection and channel; the gRPC hop alone (bare "
                f"grpc.aio server, same blocks): {median(self.hop) * 1000:.2f} ms, so the scaler's reading without "
                f"the hop is {(median(self.scaler) - median(self.hop)) / median(self.direct):.2f}x direct",
            )
        ]


async def _compare(
    broker: RabbitBroker, queue: str, address: str, bare_address: str, calls: int
) -> tuple[list[float], list[float], list[float]]:
    request = pb.GetMetricsRequest(
        scaledObjectRef=pb.ScaledObjectRef(name="overhead", scalerMetadata=queue_metadata(broker, queue))
    )
    through_scaler: list[float] = []
    direct: list[float] = []
    hop: list[float] = []
    connection = await aiormq.connect(broker.amqp_host())
    try:
        amqp: Any = await connection.channel()
        async with aio.insecure_channel(address) as channel, aio.insecure_channel(bare_address) as bare_channel:
            stub = pb_grpc.ExternalScalerStub(channel)
            bare = pb_grpc.ExternalScalerStub(bare_channel)

            async def via_scaler() -> int:
                reply = await stub.GetMetrics(request, timeout=10)
                return int(reply.metricValues[0].metricValueFloat)

            async def via_aiormq() -> int:
                declared = await amqp.queue_declare(queue, passive=True)
                return int(declared.message_count)

            async def via_bare() -> int:
                reply = await bare.GetMetrics(request, timeout=10)
                return int(reply.metricValues[0].metricValueFloat)

            for fn in (via_scaler, via_aiormq):  # warm every connection
                assert await fn() == DEPTH
            await bare.GetMetrics(request, timeout=20, wait_for_ready=True)
            plan = ((via_scaler, through_scaler), (via_aiormq, direct), (via_bare, hop))
            await time_in_alternating_blocks(plan, calls, BLOCK)
    finally:
        await connection.close()
    return through_scaler, direct, hop


def measure(broker: RabbitBroker, calls: int = 300) -> Overhead:
    queue = broker.declare("bench-overhead")
    try:
        broker.publish(queue, DEPTH)
        broker.wait_for_messages(queue, DEPTH)
        with bare_server() as bare_address, running_scaler("--cache-ttl", "0.000001") as scaler:
            through_scaler, direct, hop = asyncio.run(_compare(broker, queue, scaler.address, bare_address, calls))
            queries = scaler.metric("scaler_source_queries_total", adapter="rabbitmq")
    finally:
        delete_queues(broker, [queue])
    return Overhead(through_scaler, direct, hop, queries / (len(through_scaler) + 1))


def rows(context: Any) -> list[Row]:
    return measure(context.service("rabbitmq")).rows()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    with running_broker() as broker:
        found = measure(broker, args.calls).rows()
    print_rows(found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
