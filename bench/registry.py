"""Every benchmark `make bench` runs, in order: one entry per group of rows in BENCHMARKS.md.

A benchmark is a function `(BenchContext) -> list[Row]`. Adapter benchmarks name the adapter they need
and the bench module that measures them; when the adapter is not installed their rows read
"not run: adapter not installed" instead of failing the run. To wire one, give bench/<module>.py a
`rows(context: BenchContext) -> list[Row]` (see bench/activation.py for the shape) and, if it needs a
broker, register a starter in `context.services` (see `BenchContext.service`). Until then a module that
exists is run as a script and the end of its output is quoted in the row, marked "see note".
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from adapters.api import discover_adapter_classes
from bench import (
    activation,
    adapter_overhead,
    bounded_work,
    cluster_scale,
    grpc_instructions,
    grpc_throughput,
    noisy_neighbour,
    replicas_scale,
    source_queries,
    startup,
)
from bench.common import ROOT, Row, not_run, standalone_prometheus
from tests.fixtures.prometheus import PrometheusServer


@dataclass
class BenchContext:
    """Services shared by the benchmarks, started on first use and stopped once at the end."""

    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    # name -> starter returning (service, stop): "prometheus", "rabbitmq" (a RabbitBroker in a vhost of its
    # own on the broker at 127.0.0.1:5672, else on a node started here), "pubsub" (the emulator).
    services: dict[str, Callable[[], tuple[Any, Callable[[], None]]]] = field(default_factory=dict)
    _started: dict[str, Any] = field(default_factory=dict)

    def service(self, name: str) -> Any:
        if name not in self._started:
            service, stop = self.services[name]()
            self.stack.callback(stop)
            self._started[name] = service
        return self._started[name]

    @property
    def prometheus(self) -> PrometheusServer:
        return self.service("prometheus")  # type: ignore[no-any-return]

    def close(self) -> None:
        self.stack.close()


def _start_rabbitmq() -> tuple[Any, Callable[[], None]]:
    # Imported here: the RabbitMQ fixtures need pika, which only the dev install brings.
    from bench.rabbitmq_fanin import running_broker

    stack = contextlib.ExitStack()
    return stack.enter_context(running_broker()), stack.close


def _start_pubsub() -> tuple[Any, Callable[[], None]]:
    from tests.fixtures.pubsub import start_emulator

    emulator = start_emulator()
    return emulator, emulator.cleanup


def _start_prometheus() -> tuple[PrometheusServer, Callable[[], None]]:
    stack = contextlib.ExitStack()
    return stack.enter_context(standalone_prometheus()), stack.close


@contextlib.contextmanager
def bench_context() -> Iterator[BenchContext]:
    context = BenchContext(
        services={"prometheus": _start_prometheus, "rabbitmq": _start_rabbitmq, "pubsub": _start_pubsub}
    )
    try:
        yield context
    finally:
        context.close()


@dataclass
class Benchmark:
    name: str
    run: Callable[[BenchContext], list[Row]]
    # Rows to print when the benchmark cannot run: (what, goal).
    planned: list[tuple[str, str]] = field(default_factory=list)
    adapter: str = ""  # the adapter that must be installed, if any


def adapter_benchmark(name: str, adapter: str, module: str, planned: list[tuple[str, str]]) -> Benchmark:
    """A benchmark living in another branch's bench module: runs once the adapter and `module.rows` exist."""

    def run(context: BenchContext) -> list[Row]:
        if adapter not in discover_adapter_classes():
            return [not_run(what, goal, "adapter not installed") for what, goal in planned]
        if importlib.util.find_spec(f"bench.{module}") is None:
            return [not_run(what, goal, f"bench/{module}.py not present") for what, goal in planned]
        rows_fn = getattr(importlib.import_module(f"bench.{module}"), "rows", None)
        if rows_fn is None:
            return _run_script(module, planned)
        rows: list[Row] = rows_fn(context)
        return rows

    return Benchmark(name, run, planned, adapter)


def _run_script(module: str, planned: list[tuple[str, str]], timeout: float = 240) -> list[Row]:
    """A bench script not wired into the table yet: run it as its author wrote it and quote its result."""
    try:
        done = subprocess.run(
            [sys.executable, str(ROOT / "bench" / f"{module}.py")],
            cwd=ROOT,
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return [not_run(what, goal, f"bench/{module}.py took over {timeout:.0f} s") for what, goal in planned]
    lines = [line for line in done.stdout.splitlines() if line.strip()][-4:]
    figure = f"see note (bench/{module}.py, exit {done.returncode})"
    return [Row(what, figure, goal, None, " / ".join(lines)) for what, goal in planned]


BENCHMARKS: list[Benchmark] = [
    Benchmark("grpc_throughput", lambda c: grpc_throughput.measure(c.prometheus.url).rows()),
    # The same comparison in instructions, which the machine's noise does not move.
    Benchmark("grpc_instructions", lambda c: grpc_instructions.measure(c.prometheus.url).rows()),
    Benchmark("source_queries", lambda c: source_queries.rows(source_queries.measure(c.prometheus))),
    adapter_benchmark(
        "rabbitmq_fanin",
        "rabbitmq",
        "rabbitmq_fanin",
        [
            ("Broker connections held (RabbitMQ AMQP), 1,000 ScaledObjects over 10 queues on one broker", "1"),
            *(
                (f"RabbitMQ fan-in: source queries per TTL, {n} on one queue", "1 per TTL, 1 connection")
                for n in ("1 ScaledObject", "100 ScaledObjects", "1,000 ScaledObjects")
            ),
        ],
    ),
    Benchmark("activation_prometheus", lambda c: activation.measure(c.prometheus).rows()),
    adapter_benchmark(
        "rabbitmq_activation",
        "rabbitmq",
        "rabbitmq_activation",
        [
            (
                f"Activation latency, RabbitMQ (AMQP): first message into an empty queue -> StreamIsActive true "
                f"(push interval {interval})",
                "<= 1000 ms p95",
            )
            for interval in ("1 s, default", "0.5 s, not the default")
        ],
    ),
    adapter_benchmark(
        "pubsub_activation",
        "gcp-pubsub",
        "pubsub_activation",
        [
            (
                "Activation latency, Pub/Sub peek: first message into an empty subscription -> StreamIsActive true "
                f"(push interval {interval})",
                "<= 1000 ms p95",
            )
            for interval in ("1 s, default", "0.5 s, not the default")
        ],
    ),
    Benchmark("cluster_scale", lambda c: cluster_scale.measure(c.prometheus).rows()),
    # The same load on the old 1 s cache TTL (the default before 5 s): what the default's change is worth.
    Benchmark("cluster_scale_ttl1", lambda c: cluster_scale.measure(c.prometheus, cache_ttl=1).rows()),
    # The same shape over replicas behind one round_robin client (KEDA's), and a replica added mid-run.
    *(
        Benchmark(f"replicas_scale_{n}", lambda c, n=n: replicas_scale.measure(c.prometheus, n).rows())
        for n in (1, 2, 3)
    ),
    Benchmark("replicas_scale_up", lambda c: replicas_scale.scale_up(c.prometheus).rows()),
    Benchmark("startup", lambda c: startup.measure().rows()),
    Benchmark("noisy_neighbour", noisy_neighbour.rows),
    Benchmark("adapter_overhead", lambda c: adapter_overhead.measure(c.prometheus).rows()),
    adapter_benchmark(
        "rabbitmq_overhead",
        "rabbitmq",
        "rabbitmq_overhead",
        [("Adapter overhead: one RabbitMQ reading (AMQP) through the scaler vs direct aiormq", "<= 1.3x")],
    ),
    Benchmark("bounded_work", bounded_work.rows),
]
