"""`make bench`: every benchmark in one run, then BENCHMARKS.md (figures, goals, met or not, machine, date).

    .venv/bin/python bench/run_all.py [--only name,name] [--output BENCHMARKS.md]

Starts what it needs (a real Prometheus scraping a test exporter; broker hooks in bench/registry.py),
stops it at the end. Bounded: about 15 minutes on 2 cores. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, Row, not_run
from bench.notes import NOTES
from bench.registry import BENCHMARKS, bench_context


def machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), Linux {platform.release()}, "
        f"Python {platform.python_version()}, grpcio {grpc.__version__}; load average at the start {load}"
    )


def verdict(row: Row) -> str:
    if row.met is None:
        return "-"
    return "met" if row.met else "**not met**"


def render(rows: list[Row], started: datetime.datetime, seconds: float, host: str) -> str:
    cell = lambda text: text.replace("|", "\\|")  # noqa: E731
    lines = [
        "# Benchmarks",
        "",
        f"Measured {started:%Y-%m-%d %H:%M} UTC by `make bench` (bench/run_all.py) in {seconds / 60:.1f} min.",
        f"Machine: {host}.",
        "The machine is shared with other engineers' test runs: ratios against a baseline measured in the same",
        "run are the figures to trust; absolute numbers move with the load.",
        "",
        "| what | figure | goal | result | how |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {cell(r.what)} | {cell(r.figure)} | {cell(r.goal)} | {verdict(r)} | {cell(r.note)} |" for r in rows]
    lines += ["", NOTES.strip(), ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args()
    chosen = [b for b in BENCHMARKS if not args.only or b.name in args.only.split(",")]
    started, clock = datetime.datetime.now(datetime.UTC), time.monotonic()
    host = machine()
    rows: list[Row] = []
    with bench_context() as context:
        for benchmark in chosen:
            print(f"== {benchmark.name}", flush=True)
            began = time.monotonic()
            try:
                found = benchmark.run(context)
            except Exception as exc:
                traceback.print_exc()
                reason = f"failed ({type(exc).__name__}: {str(exc)[:120]})"
                found = [not_run(what, goal, reason) for what, goal in benchmark.planned] or [
                    not_run(benchmark.name, "", reason)
                ]
            for row in found:
                print(f"   {row.what}: {row.figure} [{verdict(row)}]", flush=True)
            print(f"   ({time.monotonic() - began:.0f} s)", flush=True)
            rows += found
    seconds = time.monotonic() - clock
    Path(args.output).write_text(render(rows, started, seconds, host))
    print(f"wrote {args.output} ({seconds / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
