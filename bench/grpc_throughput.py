"""GetMetrics throughput and latency at 64 concurrent requests: the scaler (warm cache) vs a bare grpc.aio server.

Both run in the same session, alternately, several rounds; h2load drives unary gRPC calls (POST with
content-type application/grpc, te: trailers and a length-prefixed body). Figures are printed as ratios
against the bare server, because these machines are shared and noisy. Needs Debian's nghttp2-client
(h2load) and prometheus (`make test` installs both).

    .venv/bin/python bench/grpc_throughput.py [--requests 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scaler._generated import externalscaler_pb2 as pb  # noqa: E402
from tests.fixtures._util import free_port, wait_for  # noqa: E402
from tests.fixtures.prometheus import Exporter, start_prometheus  # noqa: E402

PATH = "/externalscaler.ExternalScaler/GetMetrics"


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    succeeded: int


def grpc_body(prometheus_url: str) -> bytes:
    ref = pb.ScaledObjectRef(
        name="bench",
        namespace="default",
        scalerMetadata={
            "adapter": "prometheus",
            "serverAddress": prometheus_url,
            "query": "vector(4)",
            "threshold": "2",
        },
    )
    message = pb.GetMetricsRequest(scaledObjectRef=ref, metricName="prometheus-bench").SerializeToString()
    return b"\x00" + struct.pack(">I", len(message)) + message


def h2load(port: int, body_file: Path, requests: int) -> Run:
    with tempfile.NamedTemporaryFile(suffix=".log") as log:
        out = subprocess.run(
            [
                "h2load",
                "-n",
                str(requests),
                "-c",
                "8",
                "-m",
                "8",
                "-t",
                "1",
                "-d",
                str(body_file),
                "-H",
                "content-type: application/grpc",
                "-H",
                "te: trailers",
                "--log-file",
                log.name,
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


def wait_serving(port: int) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = health_pb2_grpc.HealthStub(channel)
    wait_for(lambda: stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1, 20, "scaler SERVING")
    channel.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not shutil.which("h2load"):
        sys.exit("h2load not found: apt-get install nghttp2-client (make test installs it)")

    exporter = Exporter()
    prometheus = start_prometheus(exporter)
    scaler_port, bare_port, http_port = free_port(), free_port(), free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scaler",
                "--grpc-address",
                f"127.0.0.1:{scaler_port}",
                "--http-address",
                f"127.0.0.1:{http_port}",
                "--cache-ttl",
                "3600",
                "--log-level",
                "WARNING",
            ],
            cwd=ROOT,
        ),
        subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "bare_server.py"), f"127.0.0.1:{bare_port}"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        ),
    ]
    try:
        wait_serving(scaler_port)
        wait_for(
            lambda: (
                grpc.insecure_channel(f"127.0.0.1:{bare_port}").unary_unary(PATH)(grpc_body("x")[5:], timeout=1)
                is not None
            ),
            20,
            "bare server",
        )
        body = Path(tempfile.mkdtemp()) / "body.bin"
        body.write_bytes(grpc_body(prometheus.url))
        # Warm the cache and check the answer is a real reading, not an error h2load would count as HTTP 200.
        channel = grpc.insecure_channel(f"127.0.0.1:{scaler_port}")
        reply = pb.GetMetricsResponse.FromString(channel.unary_unary(PATH)(body.read_bytes()[5:], timeout=10))
        assert reply.metricValues[0].metricValueFloat == 4, reply
        h2load(scaler_port, body, 2000)
        h2load(bare_port, body, 2000)

        runs: dict[str, list[Run]] = {"scaler": [], "bare": []}
        for _ in range(args.rounds):
            runs["bare"].append(h2load(bare_port, body, args.requests))
            runs["scaler"].append(h2load(scaler_port, body, args.requests))
        served_ok = sum(
            float(line.rsplit(" ", 1)[1])
            for line in httpx.get(f"http://127.0.0.1:{http_port}/metrics").text.splitlines()
            if line.startswith("scaler_grpc_requests_total{") and 'method="GetMetrics"' in line and 'code="OK"' in line
        )
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(20)
        prometheus.stop()
        exporter.close()

    def med(name: str, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in runs[name])

    print(f"GetMetrics, 64 concurrent (h2load -c 8 -m 8), {args.requests} requests x {args.rounds} rounds, median:")
    print(f"{'server':<8} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for name in ("bare", "scaler"):
        print(f"{name:<8} {med(name, 'rps'):>10.0f} {med(name, 'p50_ms'):>8.2f} {med(name, 'p99_ms'):>8.2f}")
    throughput = med("scaler", "rps") / med("bare", "rps")
    p99 = med("scaler", "p99_ms") / med("bare", "p99_ms")
    print(f"throughput ratio scaler/bare: {throughput:.2f} (goal >= 0.85)")
    print(f"p99 ratio scaler/bare:        {p99:.2f} (goal <= 1.5)")
    failed = [r for rs in runs.values() for r in rs if r.succeeded != args.requests]
    if failed:
        print(f"WARNING: {len(failed)} run(s) had failed requests")
    expected = 1 + 2000 + args.requests * args.rounds
    print(f"GetMetrics answered OK by the scaler (its own counter): {served_ok:.0f} of {expected}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
