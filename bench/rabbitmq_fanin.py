"""Fan-in: 1, 100 and 1,000 ScaledObjects polling one RabbitMQ queue through the scaler, concurrently.

Each simulated ScaledObject does what KEDA does for one external trigger every pollingInterval:
GetMetrics, then IsActive with the same ref, over one shared grpc.aio channel (KEDA shares one per
scaler address). The scaler runs as users run it (`python -m scaler serve`), against a real broker.

Reported per size: polls made, source queries the scaler sent to RabbitMQ (its own
scaler_source_queries_total), queries per second and per cache TTL, and the AMQP connections the scaler
holds (counted by the broker's management API). Baseline, measured in the same run from the same polls:
KEDA's built-in rabbitmq scaler, which costs one broker query per ScaledObject per poll and holds one
AMQP connection per ScaledObject.

    .venv/bin/python bench/rabbitmq_fanin.py [--seconds 10] [--interval 1] [--sizes 1,100,1000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scaler._generated import externalscaler_pb2 as pb  # noqa: E402
from scaler._generated import externalscaler_pb2_grpc as pb_grpc  # noqa: E402
from tests.fixtures._util import port_open, wait_for  # noqa: E402
from tests.fixtures.rabbitmq import RabbitBroker, RabbitNode  # noqa: E402
from tests.fixtures.scaler import ScalerProcess  # noqa: E402


async def scaled_object(
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


async def run_size(
    scaler: ScalerProcess, broker: RabbitBroker, metadata: dict[str, str], *, size: int, seconds: float, interval: float
) -> dict[str, float]:
    queries_before = scaler.metric("scaler_source_queries_total", adapter="rabbitmq")
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(scaler.address) as channel:
        stub = pb_grpc.ExternalScalerStub(channel)
        started = time.monotonic()
        until = started + seconds
        polls = await asyncio.gather(
            *(
                scaled_object(stub, metadata, f"so-{size}-{i}", interval=interval, until=until, latencies=latencies)
                for i in range(size)
            )
        )
        elapsed = time.monotonic() - started
    queries = scaler.metric("scaler_source_queries_total", adapter="rabbitmq") - queries_before
    connections = len(wait_for(lambda: broker.scaler_connections(scaler.proc.pid), 10, "the scaler's connection"))
    latencies.sort()
    return {
        "size": size,
        "polls": sum(polls),
        "elapsed": elapsed,
        "queries": queries,
        "connections": connections,
        "pooled": scaler.metric("scaler_pooled_clients", pool="rabbitmq-amqp"),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000 if len(latencies) > 1 else latencies[0] * 1000,
    }


def start_broker() -> tuple[RabbitBroker, RabbitNode | None]:
    if port_open(5672) and port_open(15672):
        broker, node = RabbitBroker("127.0.0.1", 5672, 15672, "guest", "guest"), None
    else:
        node = RabbitNode()
        node.start()
        broker = RabbitBroker("127.0.0.1", node.amqp_port, node.management_port, "guest", "guest", node=node)
    broker.vhost = f"scaler-bench-{uuid.uuid4().hex[:8]}"
    broker.api("PUT", f"vhosts/{broker.vhost}").raise_for_status()
    broker.api("PUT", f"permissions/{broker.vhost}/guest", json={"configure": ".*", "write": ".*", "read": ".*"})
    return broker, node


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="how long each size polls")
    parser.add_argument("--interval", type=float, default=1.0, help="each ScaledObject's polling interval (s)")
    parser.add_argument("--cache-ttl", type=float, default=1.0, help="the scaler's cache_ttl (s)")
    parser.add_argument("--sizes", default="1,100,1000", help="numbers of ScaledObjects, comma-separated")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    broker, node = start_broker()
    scaler = ScalerProcess(["--cache-ttl", str(args.cache_ttl), "--log-level", "WARNING"])
    try:
        queue = broker.declare("bench")
        broker.publish(queue, 42)
        metadata = {
            "scalerAddress": "bench",
            "adapter": "rabbitmq",
            "host": broker.amqp_host(),
            "queueName": queue,
            "mode": "QueueLength",
            "value": "10",
        }
        rows = [
            asyncio.run(run_size(scaler, broker, metadata, size=n, seconds=args.seconds, interval=args.interval))
            for n in sizes
        ]
    finally:
        scaler.stop()
        broker.close_clients()
        broker.api("DELETE", f"vhosts/{broker.vhost}")
        if node is not None:
            node.stop()

    print(
        f"\nFan-in on one queue: each ScaledObject polls every {args.interval:g}s (GetMetrics + IsActive) "
        f"for {args.seconds:g}s; scaler cache_ttl {args.cache_ttl:g}s."
    )
    print(
        "Baseline (KEDA built-in rabbitmq scaler): 1 broker query per ScaledObject per poll, 1 AMQP connection each.\n"
    )
    header = (
        "| ScaledObjects | polls | broker queries | queries/s | queries per TTL | KEDA queries | "
        "queries vs KEDA | AMQP conns | KEDA conns | poll p50 ms | poll p99 ms |"
    )
    print(header)
    print("|" + "---:|" * (header.count("|") - 1))
    for row in rows:
        ttls = row["elapsed"] / args.cache_ttl
        keda_queries = row["polls"]  # one broker query per ScaledObject per poll
        ratio = row["queries"] / keda_queries if keda_queries else 0.0
        print(
            f"| {row['size']:,} | {row['polls']:,.0f} | {row['queries']:,.0f} | {row['queries'] / row['elapsed']:.2f} "
            f"| {row['queries'] / ttls:.2f} | {keda_queries:,.0f} | 1/{1 / ratio if ratio else 0:,.1f} "
            f"| {row['connections']} (pool {row['pooled']:.0f}) | {row['size']:,} "
            f"| {row['p50_ms']:.1f} | {row['p99_ms']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
