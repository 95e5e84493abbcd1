"""Instructions per warm GetMetrics call, counted by callgrind: the scaler vs a bare grpc.aio server.

h2load's req/s (bench/grpc_throughput.py) moves by +-10 % between runs on these shared 2-core machines,
more than the differences worth measuring. callgrind counts the instructions the server process executes
(every thread), which repeat within about 1k per call whatever else the machine does. Each server runs
under `valgrind --tool=callgrind` with instrumentation off until it is warm; then h2load sends `calls`
GetMetrics (8 connections x 8 streams, as the throughput bench) with instrumentation on.

Servers: the scaler (warm cache, TTL 1 h, default settings otherwise); the bare server as generated code
registers it (the throughput bench's baseline); the same bare server with generic handlers only, as the
scaler registers its services (scaler/wire.py GenericOnly).

    .venv/bin/python bench/grpc_instructions.py [--calls 3000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, Row, standalone_prometheus
from bench.grpc_throughput import PATH, grpc_body, h2load
from tests.fixtures._util import free_port, wait_for

# The throughput goal (>= 0.95x a bare server's req/s) as instructions: at most 1/0.95 of the bare server's.
GOAL = 1 / 0.95


@dataclass
class Counted:
    per_call: dict[str, float]  # server -> instructions per call
    calls: int

    def rows(self) -> list[Row]:
        bare, scaler, generic = (self.per_call[k] for k in ("bare", "scaler", "bare-generic"))
        ratio = scaler / bare
        return [
            Row(
                "Warm GetMetrics, instructions per call (callgrind) vs bare grpc.aio",
                f"{ratio:.2f}x ({scaler / 1000:.0f}k vs {bare / 1000:.0f}k)",
                f"<= {GOAL:.2f}x bare (the inverse of >= 0.95x throughput)",
                ratio <= GOAL,
                f"{self.calls} calls each under h2load -c 8 -m 8, every thread of the server process counted; the "
                f"bare server with generic handlers only (as the scaler registers them): {generic / 1000:.0f}k, so "
                f"the scaler's own work per call is {(scaler - generic) / 1000:.0f}k instructions",
            )
        ]


def _totals(directory: Path) -> int:
    total = 0
    for dump in directory.iterdir():
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                total += int(line.split()[1])
    return total


def count(command: list[str], port: int, body: Path, calls: int) -> float:
    """Instructions per call of the server `command` (listening on `port`) over `calls` warm calls."""
    out = Path(tempfile.mkdtemp(prefix="bench-callgrind-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALER_")}
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}/callgrind.%p", *command],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    request = body.read_bytes()[5:]
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        wait_for(lambda: channel.unary_unary(PATH)(request, timeout=30) is not None, 300, " ".join(command[:3]))
        h2load(port, body, 300)  # warm: connections, caches, the first call's imports

        def control(*flags: str) -> None:
            subprocess.run(["callgrind_control", *flags, str(proc.pid)], check=True, capture_output=True)

        control("-i", "on")
        run = h2load(port, body, calls)
        control("-i", "off")
        control("-d")  # write the counted part now; from here to exit nothing more is counted
        if run.succeeded != calls:
            raise RuntimeError(f"{run.succeeded} of {calls} calls succeeded")
        time.sleep(0.5)
        return _totals(out) / calls
    finally:
        channel.close()
        proc.terminate()
        proc.wait(60)
        shutil.rmtree(out, ignore_errors=True)


def measure(prometheus_url: str, calls: int = 3000) -> Counted:
    for tool in ("valgrind", "callgrind_control", "h2load"):
        if not shutil.which(tool):
            raise RuntimeError(f"{tool} not found (make bench installs valgrind and nghttp2-client)")
    body = Path(tempfile.mkdtemp(prefix="bench-body-")) / "body.bin"
    body.write_bytes(grpc_body(prometheus_url))
    per_call = {}
    for name in ("bare", "bare-generic", "scaler"):
        port = free_port()
        if name == "scaler":
            command = [
                sys.executable,
                *("-m", "scaler", "serve", "--grpc-address", f"127.0.0.1:{port}"),
                *("--http-address", f"127.0.0.1:{free_port()}", "--cache-ttl", "3600", "--log-level", "WARNING"),
            ]
        else:
            command = [sys.executable, str(ROOT / "bench" / "bare_server.py"), f"127.0.0.1:{port}"]
            command += ["--generic-only"] if name == "bare-generic" else []
        per_call[name] = count(command, port, body, calls)
    return Counted(per_call, calls)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    with standalone_prometheus() as prometheus:
        result = measure(prometheus.url, args.calls)
    for name, instructions in result.per_call.items():
        print(f"{name:<13} {instructions / 1000:8.1f}k instructions per call")
    for row in result.rows():
        print(f"{row.what}: {row.figure} (goal {row.goal}) - {row.note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
