"""GetMetrics throughput and latency at 64 concurrent requests: the scaler (warm cache) vs a bare grpc.aio server.

Both run in the same session, alternately, several rounds; h2load drives unary gRPC calls (POST with
content-type application/grpc, te: trailers and a length-prefixed body). Figures are printed as ratios
against the bare server, because these machines are shared and noisy. Needs Debian's nghttp2-client
(h2load) and prometheus (`make test` installs both).

    .venv/bin/python bench/grpc_throughput.py [--requests 10000] [--rounds 9]
"""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Row, bare_server, median, prometheus_metadata, running_scaler, standalone_prometheus
from scaler._generated import externalscaler_pb2 as pb
from tests.fixtures._util import wait_for

PATH = "/externalscaler.ExternalScaler/GetMetrics"
THROUGHPUT_GOAL = 0.95  # issue 18
P99_GOAL = 1.2


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    succeeded: int


@dataclass
class Throughput:
    """Medians over the rounds, per server."""

    runs: dict[str, list[Run]]
    requests: int
    served_ok: float  # GetMetrics answered OK, by the scaler's own counter

    def med(self, server: str, attr: str) -> float:
        return median([getattr(r, attr) for r in self.runs[server]])

    def paired(self, attr: str) -> float:
        """Median of the per-round ratios: each round's two runs are seconds apart, so they share the
        machine's load far more than runs a minute apart do."""
        return median(
            [getattr(s, attr) / getattr(b, attr) for s, b in zip(self.runs["scaler"], self.runs["bare"], strict=True)]
        )

    @property
    def throughput_ratio(self) -> float:
        return self.paired("rps")

    @property
    def p99_ratio(self) -> float:
        return self.paired("p99_ms")

    @property
    def failed_runs(self) -> int:
        return sum(1 for rs in self.runs.values() for r in rs if r.succeeded != self.requests)

    def rows(self) -> list[Row]:
        rounds = len(self.runs["bare"])
        how = (
            f"h2load -c 8 -m 8, {self.requests} requests x {rounds} rounds, alternating; "
            "ratio = median of the per-round ratios, req/s and ms = medians"
        )
        if self.failed_runs:
            how += f"; {self.failed_runs} run(s) had failed requests"
        return [
            Row(
                "GetMetrics throughput, warm cache, 64 concurrent, vs bare grpc.aio",
                f"{self.throughput_ratio:.2f}x "
                f"({self.med('scaler', 'rps'):.0f} vs {self.med('bare', 'rps'):.0f} req/s)",
                f">= {THROUGHPUT_GOAL}x bare",
                self.throughput_ratio >= THROUGHPUT_GOAL and not self.failed_runs,
                how,
            ),
            Row(
                "GetMetrics p99 latency, same run",
                f"{self.p99_ratio:.2f}x ({self.med('scaler', 'p99_ms'):.2f} vs {self.med('bare', 'p99_ms'):.2f} ms)",
                f"<= {P99_GOAL}x bare",
                self.p99_ratio <= P99_GOAL and not self.failed_runs,
                f"p50 {self.med('scaler', 'p50_ms'):.2f} vs {self.med('bare', 'p50_ms'):.2f} ms",
            ),
        ]


def grpc_body(prometheus_url: str) -> bytes:
    ref = pb.ScaledObjectRef(
        name="bench", namespace="default", scalerMetadata=prometheus_metadata(prometheus_url, "vector(4)")
    )
    message = pb.GetMetricsRequest(scaledObjectRef=ref, metricName="prometheus-bench").SerializeToString()
    return b"\x00" + struct.pack(">I", len(message)) + message


def h2load(port: int, body_file: Path, requests: int) -> Run:
    with tempfile.NamedTemporaryFile(suffix=".log") as log:
        out = subprocess.run(
            [
                "h2load",
                *("-n", str(requests), "-c", "8", "-m", "8", "-t", "1", "-d", str(body_file)),
                *("-H", "content-type: application/grpc", "-H", "te: trailers", "--log-file", log.name),
                f"http://127.0.0.1:{port}{PATH}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        latencies = sorted(int(line.split("\t")[2]) / 1000 for line in Path(log.name).read_text().splitlines() if line)
    rps = float(out.split(" req/s")[0].rsplit(" ", 1)[1])
    succeeded = int(out.split(" succeeded")[0].rsplit(" ", 1)[1])
    return Run(rps, latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99) - 1], succeeded)


def measure(prometheus_url: str, requests: int = 10000, rounds: int = 9) -> Throughput:
    """Scaler (warm cache, TTL 1 h) and bare server alternately under h2load; both stopped at the end."""
    if not shutil.which("h2load"):
        raise RuntimeError("h2load not found: apt-get install nghttp2-client (make test installs it)")
    body = Path(tempfile.mkdtemp(prefix="bench-body-")) / "body.bin"
    body.write_bytes(grpc_body(prometheus_url))
    with bare_server() as bare_address, running_scaler("--cache-ttl", "3600") as scaler:
        bare_port = int(bare_address.rsplit(":", 1)[1])
        channel = grpc.insecure_channel(bare_address)
        wait_for(lambda: channel.unary_unary(PATH)(body.read_bytes()[5:], timeout=1) is not None, 20, "bare server")
        channel.close()
        # Warm the cache, and check the answer is a real reading, not an error h2load would count as HTTP 200.
        reply = pb.GetMetricsResponse.FromString(scaler.channel.unary_unary(PATH)(body.read_bytes()[5:], timeout=10))
        assert reply.metricValues[0].metricValueFloat == 4, reply
        h2load(scaler.grpc_port, body, 2000)
        h2load(bare_port, body, 2000)
        runs: dict[str, list[Run]] = {"scaler": [], "bare": []}
        for _ in range(rounds):
            runs["bare"].append(h2load(bare_port, body, requests))
            runs["scaler"].append(h2load(scaler.grpc_port, body, requests))
        served_ok = scaler.metric("scaler_grpc_requests_total", method="GetMetrics", code="OK")
    return Throughput(runs, requests, served_ok)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    with standalone_prometheus() as prometheus:
        result = measure(prometheus.url, args.requests, args.rounds)
    print(f"GetMetrics, 64 concurrent (h2load -c 8 -m 8), {args.requests} requests x {args.rounds} rounds, median:")
    print(f"{'server':<8} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for name in ("bare", "scaler"):
        rps, p50, p99 = (result.med(name, attr) for attr in ("rps", "p50_ms", "p99_ms"))
        print(f"{name:<8} {rps:>10.0f} {p50:>8.2f} {p99:>8.2f}")
    print(f"throughput ratio scaler/bare (median of rounds): {result.throughput_ratio:.2f} (goal >= {THROUGHPUT_GOAL})")
    print(f"p99 ratio scaler/bare (median of rounds):        {result.p99_ratio:.2f} (goal <= {P99_GOAL})")
    if result.failed_runs:
        print(f"WARNING: {result.failed_runs} run(s) had failed requests")
    expected = 1 + 2000 + args.requests * args.rounds
    print(f"GetMetrics answered OK by the scaler (its own counter): {result.served_ok:.0f} of {expected}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
