"""Behaviours KEDA users were burned by (issue 11), each on real services through a real gRPC channel."""

from __future__ import annotations

import time

import grpc
import httpx
import psutil
import pytest
from grpc_health.v1 import health_pb2

from tests.fixtures._util import free_port, wait_for
from tests.fixtures.prometheus import PrometheusServer
from tests.fixtures.scaler import StartScaler


def prom(url: str, query: str = "vector(4)", **extra: str) -> dict[str, str]:
    return {"adapter": "prometheus", "serverAddress": url, "query": query, "threshold": "2", **extra}


def test_get_metric_spec_never_needs_the_source(start_scaler: StartScaler) -> None:
    scaler = start_scaler()
    down = prom(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    spec = scaler.spec(down)
    assert spec.metricSpecs[0].targetSizeFloat == 2
    stream = scaler.stream_metric_spec(down)
    try:
        assert stream.next(timeout=10) == spec
    finally:
        stream.cancel()
    for call in (lambda: scaler.metrics(down), lambda: scaler.is_active(down)):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.RpcError) as invalid:
        scaler.spec({**down, "threshold": "0"})
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'threshold'" in invalid.value.details()


def test_push_only_on_transitions(start_scaler: StartScaler, prometheus: PrometheusServer) -> None:
    scaler = start_scaler(push_interval=0.2, cache_ttl=0.1)
    stream = scaler.stream_is_active(prom(prometheus.url, "vector(10)"))
    try:
        assert stream.next(timeout=10).result is True
        time.sleep(3)  # about 15 poll intervals on an always-active source
        polls = scaler.metric("scaler_source_queries_total", adapter="prometheus", outcome="success")
    finally:
        stream.cancel()
    assert polls >= 8, "the poller should have read the source many times"
    assert [m.result for m in stream.received] == [True]


def test_health_never_depends_on_a_source(start_scaler: StartScaler, own_prometheus: PrometheusServer) -> None:
    scaler = start_scaler()
    metadata = prom(own_prometheus.url)
    assert scaler.value(metadata) == 4
    own_prometheus.stop()
    time.sleep(1.5)  # past the cache TTL
    with pytest.raises(grpc.RpcError) as err:
        scaler.metrics(metadata)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    health = scaler.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert httpx.get(f"{scaler.http_url}/readyz").status_code == 200
    assert httpx.get(f"{scaler.http_url}/healthz").status_code == 200


def _object_series(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.startswith("scaler_scaledobject_"))


def _connections_to(pid: int, port: int) -> int:
    return sum(1 for c in psutil.Process(pid).net_connections("tcp") if c.raddr and c.raddr.port == port)


def test_no_stale_series_or_idle_connections_after_short_lived_scaledobjects(
    start_scaler: StartScaler, prometheus: PrometheusServer
) -> None:
    # Long enough that no series expires while the 400 calls are made on a loaded machine (a 2 s TTL let
    # early ones go before they were counted), short enough to watch them all go afterwards.
    scaler = start_scaler(series_ttl=12, idle_timeout=12, push_interval=0.2)
    prom_port = int(prometheus.url.rsplit(":", 1)[1])
    baseline = (
        _object_series(scaler.metrics_text()),
        scaler.metric("scaler_cache_entries"),
        scaler.metric("scaler_pooled_clients"),
        _connections_to(scaler.proc.pid, prom_port),
    )
    for i in range(200):
        metadata = prom(prometheus.url, f"vector({i})")
        scaler.metrics(metadata, name=f"short-lived-{i}", namespace=f"ns-{i % 7}")
        scaler.is_active(metadata, name=f"short-lived-{i}", namespace=f"ns-{i % 7}")
    streams = [
        scaler.stream_is_active(prom(prometheus.url, f"vector({i})"), name=f"short-lived-{i}") for i in range(10)
    ]
    for stream in streams:
        stream.next(timeout=10)
    during = _object_series(scaler.metrics_text())
    assert during >= 200 * 3  # reading, active and age per ScaledObject
    assert scaler.metric("scaler_source_pollers") == 10
    assert scaler.metric("scaler_pooled_clients") == 1  # one HTTP pool for the one Prometheus
    for stream in streams:
        stream.cancel()

    def back_to_baseline() -> bool:
        now = (
            _object_series(scaler.metrics_text()),
            scaler.metric("scaler_cache_entries"),
            scaler.metric("scaler_pooled_clients"),
            _connections_to(scaler.proc.pid, prom_port),
        )
        return now == baseline and scaler.metric("scaler_source_pollers") == 0

    wait_for(back_to_baseline, 40, "series, cache entries, pollers and connections to return to the baseline")


def test_fallback_on_the_server_side_is_opt_in_and_visible(
    start_scaler: StartScaler, own_prometheus: PrometheusServer
) -> None:
    scaler = start_scaler()
    default = prom(own_prometheus.url, "vector(7)")
    opted_in = prom(own_prometheus.url, "vector(7)", onSourceError="lastKnown", maxStaleness="5m")
    assert scaler.value(default, name="plain") == 7
    assert scaler.value(opted_in, name="opted-in") == 7
    own_prometheus.stop()
    time.sleep(1.5)
    with pytest.raises(grpc.RpcError) as err:
        scaler.metrics(default, name="plain")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # default: KEDA's fallback applies
    name = scaler.spec(opted_in, name="opted-in").metricSpecs[0].metricName
    assert scaler.metrics(opted_in, name, name="opted-in").metricValues[0].metricValueFloat == 7
    assert scaler.metric("scaler_scaledobject_stale", scaledobject="opted-in") == 1
    assert scaler.metric("scaler_scaledobject_stale", scaledobject="plain") == 0
    assert scaler.metric("scaler_stale_readings_served_total", adapter="prometheus") >= 1
    assert "onSourceError: lastKnown" in scaler.logs()
