"""What every benchmark shares: the repo on sys.path, a scaler process with its pid, rows for the results table.

Benchmarks reuse the test fixtures (real Prometheus, the scaler started as `python -m scaler serve`), so a
figure is measured against the same real components the tests use.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fixtures._util import free_port  # noqa: E402
from tests.fixtures.prometheus import Exporter, PrometheusServer, start_prometheus  # noqa: E402
from tests.fixtures.scaler import ScalerProcess  # noqa: E402

# Benchmarks log only what goes wrong: INFO lines per call would cost the scaler CPU we are measuring.
QUIET = ["--log-level", "WARNING"]


@dataclass
class Row:
    """One line of BENCHMARKS.md: a figure, its goal, and whether it met it (None: not measured)."""

    what: str
    figure: str
    goal: str
    met: bool | None
    note: str = ""


def not_run(what: str, goal: str, reason: str) -> Row:
    return Row(what, f"not run: {reason}", goal, None)


def print_rows(rows: Iterable[Row]) -> None:
    """A benchmark run on its own prints its rows like this."""
    for row in rows:
        print(f"{row.what}: {row.figure}; {row.note} -> {'met' if row.met else 'NOT met'}")


def start_scaler(*flags: str) -> ScalerProcess:
    """The scaler as users run it, on free loopback ports, waited for until SERVING."""
    return ScalerProcess([*QUIET, *flags])


@contextlib.contextmanager
def running_scaler(*flags: str) -> Iterator[ScalerProcess]:
    scaler = start_scaler(*flags)
    try:
        yield scaler
    finally:
        scaler.stop()


@contextlib.contextmanager
def standalone_prometheus() -> Iterator[PrometheusServer]:
    """A real Prometheus scraping a test exporter (every 1 s), both stopped at the end."""
    exporter = Exporter()
    server = start_prometheus(exporter)
    try:
        yield server
    finally:
        server.stop()
        exporter.close()


@contextlib.contextmanager
def bare_server() -> Iterator[str]:
    """bench/bare_server.py (grpc.aio answering GetMetrics with a constant) on a free loopback port: its address."""
    address = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "bare_server.py"), address], cwd=ROOT, stdout=subprocess.DEVNULL
    )
    try:
        yield address
    finally:
        proc.terminate()
        proc.wait(20)


async def time_in_alternating_blocks(
    plan: Sequence[tuple[Callable[[], Awaitable[object]], list[float]]], calls: int, block: int
) -> None:
    """Call each of `plan`'s functions `block` times in turn, one call at a time, appending each call's seconds
    to its list, until the first list holds `calls`: alternating blocks spread the machine's noise evenly."""
    while len(plan[0][1]) < calls:
        for call, times in plan:
            for _ in range(block):
                started = time.perf_counter()
                await call()
                times.append(time.perf_counter() - started)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (p95 of 20 values is the 19th smallest)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def prometheus_metadata(prometheus_url: str, query: str, threshold: str = "2", **extra: str) -> dict[str, str]:
    return {"adapter": "prometheus", "serverAddress": prometheus_url, "query": query, "threshold": threshold, **extra}


class LoadGenerator:
    """bench/keda_load.py in its own process, so the load's CPU is never counted as the scaler's."""

    def __init__(self, mode: str, **options: object) -> None:
        args = [sys.executable, str(ROOT / "bench" / "keda_load.py"), mode]
        for name, value in options.items():
            flag = f"--{name.replace('_', '-')}"
            args += [flag] if value is True else [flag, str(value)]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True)

    def next_event(self, expected: str) -> dict[str, object]:
        import json

        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event: dict[str, object] = json.loads(line)
            if event["event"] == expected:
                return event
        raise RuntimeError(f"load generator exited with {self.proc.wait()} before '{expected}'")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(20)


def start_profile(pid: int, seconds: float, name: str) -> object | None:
    """With BENCH_PROFILE=<dir>, py-spy records the scaler during a measured window (collapsed stacks)."""
    import os
    import shutil

    directory = os.environ.get("BENCH_PROFILE")
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not directory or not Path(spy).exists():
        return None
    Path(directory).mkdir(parents=True, exist_ok=True)
    out = Path(directory) / f"{name}.txt"
    return subprocess.Popen(
        [spy, "record", "--format", "raw", "-o", str(out), "--pid", str(pid), "-d", str(int(seconds)), "-r", "200"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
