"""The scaler's own metrics, in one registry per server (so several servers can live in one test process).

Per-ScaledObject series are produced at scrape time from a table that forgets objects that stopped
asking, so a cluster that creates and deletes ScaledObjects all day does not grow /metrics.
"""

from __future__ import annotations

import bisect
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from . import __version__

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BUCKET_LABELS = (*map(floatToGoString, _LATENCY_BUCKETS), "+Inf")  # `le` as prometheus_client's Histogram writes it


@dataclass
class _ObjectState:
    value: float | None = None
    active: bool | None = None
    read_at: float | None = None  # wall-clock time the reading was taken at the source
    stale: bool = False
    last_asked: float = 0.0


class ScaledObjectSeries(Collector):
    """Last reading, activity and reading age per (namespace, ScaledObject, metric)."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._objects: dict[tuple[str, str, str], _ObjectState] = {}

    def __len__(self) -> int:
        return len(self._objects)

    def record(
        self,
        namespace: str,
        name: str,
        metric: str,
        *,
        value: float | None = None,
        active: bool | None = None,
        read_at: float | None = None,
        stale: bool = False,
    ) -> None:
        key = (namespace, name, metric)
        state = self._objects.get(key)
        if state is None:  # not setdefault: that would build a throw-away state on every call
            state = self._objects[key] = _ObjectState()
        state.last_asked = time.time()
        if value is not None:
            state.value = value
        if active is not None:
            state.active = active
        if read_at is not None:
            state.read_at = read_at
            state.stale = stale

    def sweep(self) -> int:
        cutoff = time.time() - self.ttl
        gone = [key for key, state in self._objects.items() if state.last_asked < cutoff]
        for key in gone:
            del self._objects[key]
        return len(gone)

    def collect(self) -> Iterator[Metric]:
        self.sweep()
        labels = ["namespace", "scaledobject", "metric"]
        reading = GaugeMetricFamily(
            "scaler_scaledobject_reading", "Last reading served for a ScaledObject", labels=labels
        )
        active = GaugeMetricFamily(
            "scaler_scaledobject_active", "1 when the ScaledObject was last reported active", labels=labels
        )
        age = GaugeMetricFamily(
            "scaler_scaledobject_reading_age_seconds",
            "Age of the last reading served for a ScaledObject",
            labels=labels,
        )
        stale = GaugeMetricFamily(
            "scaler_scaledobject_stale", "1 when the last reading served was a stale (lastKnown) one", labels=labels
        )
        now = time.time()
        for (namespace, name, metric), state in list(self._objects.items()):
            key = [namespace, name, metric]
            if state.value is not None:
                reading.add_metric(key, state.value)
            if state.active is not None:
                active.add_metric(key, 1.0 if state.active else 0.0)
            if state.read_at is not None:
                age.add_metric(key, max(0.0, now - state.read_at))
                stale.add_metric(key, 1.0 if state.stale else 0.0)
        yield from (reading, active, age, stale)


class CallCounts(Collector):
    """gRPC calls by method and code, unary call durations, and cache results, exported at scrape time.

    Plain ints, because every call counts here: prometheus_client's Counter and Histogram take a lock and
    walk the buckets in Python on each observation (1.5 us per warm GetMetrics, a fifth of its whole cost,
    issue 18). Only the event loop writes them (every RPC and the /metrics scrape run on it).
    """

    def __init__(self) -> None:
        self.calls: dict[tuple[str, str], int] = {}
        self.durations: dict[str, list[float]] = {}  # per method: a count per bucket, +Inf last, then the sum
        self.cache = dict.fromkeys(("hit", "miss", "coalesced"), 0)

    def count(self, method: str, code: str, seconds: float | None) -> None:
        key = (method, code)
        self.calls[key] = self.calls.get(key, 0) + 1
        if seconds is not None:
            counts = self.durations.get(method)
            if counts is None:
                counts = self.durations[method] = [0.0] * (len(_LATENCY_BUCKETS) + 2)
            counts[bisect.bisect_left(_LATENCY_BUCKETS, seconds)] += 1  # the first bucket whose `le` holds it
            counts[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "scaler_grpc_requests", "gRPC calls handled, by method and status code", labels=["method", "code"]
        )
        for (method, code), calls in sorted(self.calls.items()):
            requests.add_metric([method, code], calls)
        durations = HistogramMetricFamily(
            "scaler_grpc_request_duration_seconds", "Time to answer a unary gRPC call", labels=["method"]
        )
        for method, counts in sorted(self.durations.items()):
            cumulative, buckets = 0.0, []
            for bound, count in zip(_BUCKET_LABELS, counts[:-1], strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            durations.add_metric([method], buckets, counts[-1])
        cache = CounterMetricFamily(
            "scaler_cache_requests", "Reading requests by cache result: hit, miss or coalesced", labels=["result"]
        )
        for result, requests_of in self.cache.items():
            cache.add_metric([result], requests_of)
        yield from (requests, durations, cache)


class ScalerMetrics:
    def __init__(self, series_ttl: float) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.calls = CallCounts()
        r.register(self.calls)
        self.source_queries = Counter(
            "scaler_source_queries",
            "Queries sent to sources, by adapter and outcome",
            ["adapter", "outcome"],
            registry=r,
        )
        self.source_seconds = Histogram(
            "scaler_source_query_duration_seconds",
            "Time a source query took",
            ["adapter"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.push_streams = Gauge("scaler_push_streams_open", "Open push streams, by RPC", ["method"], registry=r)
        self.pollers = Gauge("scaler_source_pollers", "Source pollers running for push streams", registry=r)
        self.pooled_clients = Gauge(
            "scaler_pooled_clients",
            "Open pooled source clients (connections, HTTP pools), by pool",
            ["pool"],
            registry=r,
        )
        self.cache_entries = Gauge("scaler_cache_entries", "Sources with a cached reading", registry=r)
        self.stale_served = Counter(
            "scaler_stale_readings_served",
            "Readings served from the lastKnown policy after a source error",
            ["adapter"],
            registry=r,
        )
        self.tasks = Gauge(
            "scaler_asyncio_tasks", "Pending asyncio tasks in the server (pollers, queries, calls)", registry=r
        )
        self.build = Info("scaler_build", "Version of the scaler and its runtime", registry=r)
        self.build.info({"version": __version__, "python": platform.python_version(), "grpcio": grpc.__version__})
        self.objects = ScaledObjectSeries(series_ttl)
        r.register(self.objects)
        ProcessCollector(registry=r)
        for method in ("StreamIsActive", "StreamMetricSpec"):
            self.push_streams.labels(method)

    def count_request(self, method: str, code: str, seconds: float | None = None) -> None:
        """One answered call; `seconds` for unary calls (streams have no meaningful duration)."""
        self.calls.count(method, code, seconds)

    def count_cache(self, result: str) -> None:
        self.calls.cache[result] += 1
