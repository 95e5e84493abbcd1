"""Bounded work per call: what one hostile answer or many registered secrets cost the scaler's event loop.

    .venv/bin/python bench/bounded_work.py

- A Prometheus answer of many small series, read by the real HTTP client (adapters.http) from a loopback
  server, each case in a fresh process (peak RSS is per process): the HTTP layer's 16 MiB ceiling (what
  the Prometheus adapter accepted before), the same answer against the adapter's 1 MiB cap, and the
  largest answer the cap accepts. Figures: peak RSS growth and the longest event-loop stall (a 1 ms
  ticker's largest gap) while the call runs.
- redact() on a typical log line with 0 and 10,000 registered secrets, against the previous algorithm
  (one substring search per secret), all in this run.
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import string
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, Row, print_rows

MIB = 1024 * 1024
_CASES = (("ceiling", 16 * MIB, 16 * MIB), ("capped", 16 * MIB, MIB), ("largest", MIB - 4096, MIB))
_LINE = (
    "2026-12-02T14:56:59.123Z warning scaler.service StreamIsActive: source error, stream kept open: cannot reach "
    "Prometheus at http://prometheus.monitoring:9090: ClientConnectorError: Cannot connect to host "
    "prometheus.monitoring:9090 ssl:default [Connection refused] namespace=team-a scaledobject=orders"
)


def vector_answer(size: int) -> bytes:
    """A Prometheus vector answer of about `size` bytes, made of the smallest series there are."""
    item = b'{"metric":{},"value":[1,"1"]},'
    head, tail = b'{"status":"success","data":{"resultType":"vector","result":[', b'{"metric":{},"value":[1,"1"]}]}}'
    return head + item * ((size - len(head) - len(tail)) // len(item)) + tail


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def _measure_answer(size: int, cap: int) -> dict[str, Any]:
    from adapters.api import AdapterError, HttpClients, HttpEndpoint
    from tests.fixtures._util import LoopbackHttpServer, QuietHandler

    body = vector_answer(size)

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            self.reply(200, body if self.path.startswith("/api/v1/query") else b"{}")

    server = LoopbackHttpServer(Handler)
    http = HttpClients()
    endpoint = HttpEndpoint.for_url(server.url)
    # Warm up: aiohttp's import and the pooled session are paid once per process, not per answer.
    await http.get_json(server.url + "/warm-up", endpoint=endpoint, source="P", timeout=60)
    stall = 0.0
    done = False

    async def ticker() -> None:
        nonlocal stall
        loop = asyncio.get_running_loop()
        while not done:
            before = loop.time()
            await asyncio.sleep(0.001)
            stall = max(stall, loop.time() - before - 0.001)

    baseline = _peak_rss()
    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    stall = 0.0
    started = time.perf_counter()
    try:
        await http.get_json(
            server.url + "/api/v1/query",
            endpoint=HttpEndpoint.for_url(server.url),
            source="P",
            timeout=60,
            max_bytes=cap,
        )
        outcome = "parsed"
    except AdapterError as error:
        outcome = f"refused: {error.message}"
    seconds = time.perf_counter() - started
    done = True
    await tick
    await http.pool.close_all()
    server.close()
    return {"outcome": outcome, "rss_mb": (_peak_rss() - baseline) / MIB, "stall_ms": stall * 1000, "s": seconds}


def measure_answers() -> dict[str, dict[str, Any]]:
    results = {}
    for name, size, cap in _CASES:
        done = subprocess.run(
            [sys.executable, __file__, "--answer", str(size), str(cap)],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
        results[name] = json.loads(done.stdout.splitlines()[-1])
    return results


def _old_redact(secrets: list[str], text: str) -> str:
    """The registry's previous algorithm: one substring search per secret, longest first."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def _per_call(call: Any, seconds: float = 1.0) -> float:
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(50):
            call()
        calls += 50
    return elapsed / calls


def measure_redaction(count: int = 10_000) -> dict[str, float]:
    from adapters.redaction import SecretRegistry

    rng = random.Random(15)
    secrets = ["".join(rng.choices(string.ascii_letters + string.digits, k=rng.randint(8, 40))) for _ in range(count)]
    empty, full = SecretRegistry(), SecretRegistry()
    full.add(*secrets)
    ordered = sorted(secrets, key=len, reverse=True)
    return {
        "none": _per_call(lambda: empty.redact(_LINE)),
        "indexed": _per_call(lambda: full.redact(_LINE)),
        "loop": _per_call(lambda: _old_redact(ordered, empty.redact(_LINE)), 2.0),
    }


def rows(context: object = None) -> list[Row]:
    answers = measure_answers()
    ceiling, capped, largest = answers["ceiling"], answers["capped"], answers["largest"]
    answer_rows = [
        Row(
            "Prometheus answer of 16 MiB of small series: peak RSS growth / longest event-loop stall",
            f"before (16 MiB ceiling, parsed): +{ceiling['rss_mb']:.0f} MB / {ceiling['stall_ms']:.0f} ms; "
            f"now (refused at the 1 MiB cap): +{capped['rss_mb']:.0f} MB / {capped['stall_ms']:.0f} ms",
            "refused; < 16 MB and < 50 ms",
            capped["outcome"].startswith("refused") and capped["rss_mb"] < 16 and capped["stall_ms"] < 50,
            "bench/bounded_work.py: adapters.http get_json from a loopback server, one fresh process per case",
        ),
        Row(
            "Largest Prometheus answer the 1 MiB cap accepts (~33,000 small series): RSS growth / loop stall",
            f"+{largest['rss_mb']:.0f} MB / {largest['stall_ms']:.0f} ms ({largest['outcome']}), "
            f"{largest['stall_ms'] / ceiling['stall_ms']:.2f}x of the 16 MiB answer's stall",
            "parsed; stall < 1/8 of the 16 MiB answer's (same run)",
            largest["outcome"] == "parsed" and largest["stall_ms"] < ceiling["stall_ms"] / 8,
            "bench/bounded_work.py; such an answer then fails the 10,000-series cap, realistic ones are far smaller",
        ),
    ]
    times = measure_redaction()
    ratio, old_ratio = times["indexed"] / times["none"], times["loop"] / times["none"]
    return [
        *answer_rows,
        Row(
            "redact() per log line with 10,000 registered secrets, vs 0 secrets (same run)",
            f"{times['indexed'] * 1e6:.0f} us = {ratio:.1f}x of 0 secrets ({times['none'] * 1e6:.1f} us); "
            f"the previous loop over every secret: {times['loop'] * 1e6:.0f} us = {old_ratio:.0f}x",
            "< 20x of 0 secrets",
            ratio < 20,
            f"bench/bounded_work.py: a {len(_LINE)}-character log line, random secrets of 8-40 characters",
        ),
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--answer"]:
        print(json.dumps(asyncio.run(_measure_answer(int(sys.argv[2]), int(sys.argv[3])))))
    else:
        print_rows(rows())
