"""Adapter overhead: one Prometheus reading through the scaler vs the same query made directly with aiohttp.

The scaler runs with a cache TTL of 1 µs, so every GetMetrics is a real query to Prometheus. The direct
path is what a hand-written client would do with the client library the scaler itself uses: a pooled
aiohttp.ClientSession GET of /api/v1/query, JSON decoded and the value read. Calls alternate in blocks,
one at a time, from this process; the ratio of medians is the figure (goal <= 1.3x). In the same blocks:
the same query with httpx (the client the scaler used before), and GetMetrics to bench/bare_server.py
(grpc.aio answering a constant), which prices the gRPC hop alone.

    .venv/bin/python bench/adapter_overhead.py [--calls 300]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
from grpc import aio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Row,
    bare_server,
    median,
    percentile,
    print_rows,
    prometheus_metadata,
    running_scaler,
    standalone_prometheus,
    time_in_alternating_blocks,
)
from scaler._generated import externalscaler_pb2 as pb
from scaler._generated import externalscaler_pb2_grpc as pb_grpc
from tests.fixtures.prometheus import PrometheusServer

METRIC = "bench_overhead_depth"
GOAL = 1.3
BLOCK = 25


@dataclass
class Overhead:
    scaler: list[float]
    direct: list[float]
    with_httpx: list[float]
    hop: list[float]
    queries_per_call: float

    @property
    def ratio(self) -> float:
        return median(self.scaler) / median(self.direct)

    def rows(self) -> list[Row]:
        return [
            Row(
                "Adapter overhead: one Prometheus reading through the scaler vs direct aiohttp",
                f"{self.ratio:.2f}x ({median(self.scaler) * 1000:.2f} vs {median(self.direct) * 1000:.2f} ms median)",
                f"<= {GOAL}x",
                self.ratio <= GOAL and self.queries_per_call >= 0.99,
                f"{len(self.scaler)} sequential calls each, alternating blocks of {BLOCK}; p90 "
                f"{percentile(self.scaler, 0.9) * 1000:.2f} vs {percentile(self.direct, 0.9) * 1000:.2f} ms; "
                f"{self.queries_per_call:.2f} Prometheus queries per scaler call (every call a real query); "
                f"same blocks: direct httpx {median(self.with_httpx) * 1000:.2f} ms (the scaler is "
                f"{median(self.scaler) / median(self.with_httpx):.2f}x that), the gRPC hop alone (bare grpc.aio "
                f"server) {median(self.hop) * 1000:.2f} ms, so the scaler's reading without the hop is "
                f"{(median(self.scaler) - median(self.hop)) / median(self.direct):.2f}x direct aiohttp",
            )
        ]


async def _compare(
    prometheus: PrometheusServer, address: str, bare_address: str, calls: int
) -> tuple[list[float], list[float], list[float], list[float]]:
    query = f'{METRIC}{{bench="overhead"}}'
    url = f"{prometheus.url}/api/v1/query"
    request = pb.GetMetricsRequest(
        scaledObjectRef=pb.ScaledObjectRef(name="overhead", scalerMetadata=prometheus_metadata(prometheus.url, query))
    )
    through_scaler: list[float] = []
    direct: list[float] = []
    with_httpx: list[float] = []
    hop: list[float] = []
    async with (
        aio.insecure_channel(address) as channel,
        aio.insecure_channel(bare_address) as bare_channel,
        aiohttp.ClientSession() as session,
        httpx.AsyncClient(trust_env=False) as client,
    ):
        stub = pb_grpc.ExternalScalerStub(channel)
        bare = pb_grpc.ExternalScalerStub(bare_channel)

        async def via_scaler() -> float:
            reply = await stub.GetMetrics(request, timeout=10)
            return float(reply.metricValues[0].metricValueFloat)

        async def via_aiohttp() -> float:
            async with session.get(url, params={"query": query}, timeout=aiohttp.ClientTimeout(total=10)) as response:
                response.raise_for_status()
                body = await response.json()
            return float(body["data"]["result"][0]["value"][1])

        async def via_httpx() -> float:
            response = await client.get(url, params={"query": query}, timeout=10)
            response.raise_for_status()
            return float(response.json()["data"]["result"][0]["value"][1])

        async def via_bare() -> float:
            await bare.GetMetrics(request, timeout=10)
            return 3.0

        await bare.GetMetrics(request, timeout=20, wait_for_ready=True)
        for fn in (via_scaler, via_aiohttp, via_httpx, via_bare):  # warm every connection
            assert await fn() == 3
        plan = ((via_scaler, through_scaler), (via_aiohttp, direct), (via_httpx, with_httpx), (via_bare, hop))
        await time_in_alternating_blocks(plan, calls, BLOCK)
    return through_scaler, direct, with_httpx, hop


def measure(prometheus: PrometheusServer, calls: int = 300) -> Overhead:
    assert prometheus.exporter is not None
    prometheus.exporter.set(METRIC, 3, bench="overhead")
    prometheus.wait_for_value(f'{METRIC}{{bench="overhead"}}', 3)
    with bare_server() as bare_address, running_scaler("--cache-ttl", "0.000001") as scaler:
        through_scaler, direct, with_httpx, hop = asyncio.run(_compare(prometheus, scaler.address, bare_address, calls))
        queries = scaler.metric("scaler_source_queries_total", adapter="prometheus")
    return Overhead(through_scaler, direct, with_httpx, hop, queries / (len(through_scaler) + 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    with standalone_prometheus() as prometheus:
        print_rows(measure(prometheus, args.calls).rows())
    return 0


if __name__ == "__main__":
    sys.exit(main())
