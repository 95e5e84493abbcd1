"""A load generator that calls the scaler the way KEDA does, run as its own process (grpc.aio, one channel).

Modes (JSON lines on stdout; the harness reads them):
  sweep   every ScaledObject calls GetMetrics at least once, round-robin, `--concurrency` in flight,
          for at least `--duration` seconds; then prints {"event": "done", ...}.
  cluster KEDA's polling: each ScaledObject gets GetMetricSpec once, then every `--poll` seconds GetMetrics
          followed by IsActive (KEDA's scale loop), and every `--hpa` seconds another GetMetrics (the HPA
          reading through KEDA's metrics server); phases are random, as for independent ScaledObjects.
          The first `--streams` ScaledObjects are external-push triggers and hold a StreamIsActive open.
          Prints {"event": "warm"} after one full polling interval, and {"event": "done"} `--duration`
          seconds after that.

ScaledObject i reads source i // per_source: the query `<metric>{source="s<n>"}`; its threshold is 1 + i % 97
so that every ScaledObject has its own metadata (KEDA sends each trigger's own map).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpc import aio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scaler._generated import externalscaler_pb2 as pb
from scaler._generated import externalscaler_pb2_grpc as pb_grpc


def scaled_object(args: argparse.Namespace, index: int) -> Any:
    source = index // args.per_source
    metadata = {
        "adapter": "prometheus",
        "scalerAddress": args.address,
        "serverAddress": args.prometheus,
        "query": f'{args.metric}{{source="s{source}"}}',
        "threshold": str(1 + index % 97),
        "activationThreshold": "0",
    }
    return pb.ScaledObjectRef(name=f"so-{index}", namespace=f"ns-{index % 50}", scalerMetadata=metadata)


@dataclass
class Counters:
    calls: int = 0
    errors: int = 0
    stream_messages: int = 0
    stream_errors: int = 0
    stream_reopened: int = 0  # streams the server ended with OK, reopened
    error_samples: list[str] = field(default_factory=list)

    def failed(self, exc: aio.AioRpcError) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(f"{exc.code().name}: {exc.details()}"[:200])


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def sweep(args: argparse.Namespace, stub: Any, counters: Counters) -> None:
    requests = [
        pb.GetMetricsRequest(scaledObjectRef=scaled_object(args, i), metricName="") for i in range(args.objects)
    ]
    started = time.monotonic()
    deadline = started + args.duration
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(requests) or time.monotonic() < deadline:
            request = requests[next_index % len(requests)]
            next_index += 1
            try:
                await stub.GetMetrics(request, timeout=30)
                counters.calls += 1
            except aio.AioRpcError as exc:
                counters.failed(exc)

    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    emit(
        "done",
        calls=counters.calls,
        errors=counters.errors,
        elapsed=time.monotonic() - started,
        error_samples=counters.error_samples,
    )


async def cluster(args: argparse.Namespace, stub: Any, counters: Counters) -> None:
    rng = random.Random(7)
    refs = [scaled_object(args, i) for i in range(args.objects)]
    # KEDA asks for the spec once per ScaledObject (at reconcile); the first poll or HPA read waits for it.
    specs: dict[int, asyncio.Task[str]] = {}
    started = time.monotonic()
    # (when, kind, index): kind 0 = KEDA's poll (GetMetrics + IsActive), 1 = the HPA's GetMetrics.
    events: list[tuple[float, int, int]] = []
    for i in range(args.objects):
        events.append((started + rng.uniform(0, args.poll), 0, i))
        events.append((started + rng.uniform(0, args.hpa), 1, i))
    heapq.heapify(events)
    tasks: set[asyncio.Task[None]] = set()

    async def spec(i: int) -> str:
        name: str = (await stub.GetMetricSpec(refs[i], timeout=30)).metricSpecs[0].metricName
        counters.calls += 1
        return name

    async def get_metrics(i: int) -> None:
        if i not in specs:
            specs[i] = asyncio.create_task(spec(i))
        name = await asyncio.shield(specs[i])
        await stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=refs[i], metricName=name), timeout=30)
        counters.calls += 1

    async def call(kind: int, i: int) -> None:
        try:
            await get_metrics(i)
            if kind == 0:
                await stub.IsActive(refs[i], timeout=30)
                counters.calls += 1
        except aio.AioRpcError as exc:
            counters.failed(exc)

    async def stream(i: int) -> None:
        # As KEDA's push loop: reopen 2 s after a clean end (the server ends streams at max_connection_age),
        # after an error back off from 2 s, doubling up to 60 s. Without the reopening, every stream would be
        # gone one connection age into the run, and so would its poller's source queries.
        backoff = 2.0
        while True:
            try:
                async for _ in stub.StreamIsActive(refs[i]):
                    counters.stream_messages += 1
                counters.stream_reopened += 1
                backoff = 2.0
                await asyncio.sleep(backoff)
            except aio.AioRpcError as exc:
                if exc.code().name == "CANCELLED":
                    return
                counters.stream_errors += 1
                counters.failed(exc)
                await asyncio.sleep(backoff)
                backoff = min(60.0, backoff * 2)

    def spawn(coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    streams = [asyncio.create_task(stream(i)) for i in range(args.streams)]
    warm_at = started + args.poll
    end_at = warm_at + args.duration
    warm_sent = False
    while True:
        now = time.monotonic()
        if not warm_sent and now >= warm_at:
            warm_sent = True
            emit("warm", calls=counters.calls, errors=counters.errors, streams=args.streams)
        if now >= end_at:
            break
        while events and events[0][0] <= now:
            when, kind, i = heapq.heappop(events)
            spawn(call(kind, i))
            heapq.heappush(events, (when + (args.poll if kind == 0 else args.hpa), kind, i))
        await asyncio.sleep(max(0.0, min(events[0][0], end_at) - time.monotonic()))
    # Report before cancelling what is still in flight: those cancellations are ours, not the scaler's.
    emit(
        "done",
        calls=counters.calls,
        errors=counters.errors,
        stream_messages=counters.stream_messages,
        stream_errors=counters.stream_errors,
        stream_reopened=counters.stream_reopened,
        in_flight_at_end=len(tasks),
        elapsed=time.monotonic() - started,
        error_samples=counters.error_samples,
    )
    pending = [*streams, *tasks, *specs.values()]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("mode", choices=("sweep", "cluster"))
    parser.add_argument("--address", required=True)
    parser.add_argument("--prometheus", required=True)
    parser.add_argument("--metric", required=True)
    parser.add_argument("--objects", type=int, required=True)
    parser.add_argument("--per-source", type=int, default=10)
    parser.add_argument("--duration", type=float, default=5)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--streams", type=int, default=0)
    parser.add_argument("--poll", type=float, default=30)
    parser.add_argument("--hpa", type=float, default=15)
    parser.add_argument(
        "--round-robin", action="store_true", help="balance over every address --address resolves to, as KEDA does"
    )
    args = parser.parse_args()
    # KEDA's client: one shared HTTP/2 connection per scaler address (per resolved address with round_robin;
    # grpc's DNS resolver keeps its default 30 s between resolutions, as grpc-go's does).
    options = [("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]}))]
    async with aio.insecure_channel(args.address, options=options if args.round_robin else None) as channel:
        stub = pb_grpc.ExternalScalerStub(channel)
        counters = Counters()
        await (sweep if args.mode == "sweep" else cluster)(args, stub, counters)


if __name__ == "__main__":
    asyncio.run(main())
