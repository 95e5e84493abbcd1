"""/metrics, /healthz, /readyz, gRPC health and reflection, on a running server."""

from __future__ import annotations

import grpc
import httpx
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.fixtures.prometheus import PrometheusServer
from tests.fixtures.scaler import ScalerProcess

FAMILIES = [
    "scaler_grpc_requests_total",
    "scaler_grpc_request_duration_seconds",
    "scaler_source_queries_total",
    "scaler_source_query_duration_seconds",
    "scaler_cache_requests_total",
    "scaler_cache_entries",
    "scaler_source_pollers",
    "scaler_push_streams_open",
    "scaler_pooled_clients",
    "scaler_scaledobject_reading",
    "scaler_scaledobject_active",
    "scaler_scaledobject_reading_age_seconds",
    "scaler_build_info",
    "process_resident_memory_bytes",
]


def test_metrics_expose_every_family_with_per_scaledobject_series(
    scaler: ScalerProcess, prometheus: PrometheusServer
) -> None:
    metadata = {"adapter": "prometheus", "serverAddress": prometheus.url, "query": "vector(6)", "threshold": "2"}
    name = scaler.spec(metadata, name="obs-worker", namespace="shop").metricSpecs[0].metricName
    scaler.metrics(metadata, name, name="obs-worker", namespace="shop")
    scaler.is_active(metadata, name="obs-worker", namespace="shop")
    text = scaler.metrics_text()
    for family in FAMILIES:
        assert f"\n{family}" in text or text.startswith(family), f"{family} missing from /metrics"
    labels = {"namespace": "shop", "scaledobject": "obs-worker", "metric": name}
    assert scaler.metric("scaler_scaledobject_reading", **labels) == 6
    assert scaler.metric("scaler_scaledobject_active", **labels) == 1
    assert scaler.metric("scaler_grpc_requests_total", method="GetMetrics", code="OK") >= 1
    assert scaler.metric("scaler_source_queries_total", adapter="prometheus", outcome="success") >= 1


def test_no_url_or_credentials_in_any_metric_label(scaler: ScalerProcess, prometheus: PrometheusServer) -> None:
    url = prometheus.url.replace("http://", "http://someone:label-secret@")
    scaler.metrics({"adapter": "prometheus", "serverAddress": url, "query": "vector(1)", "threshold": "1"})
    text = scaler.metrics_text()
    assert "label-secret" not in text
    assert prometheus.url not in text


def test_http_health_endpoints(scaler: ScalerProcess) -> None:
    assert httpx.get(f"{scaler.http_url}/healthz").status_code == 200
    assert httpx.get(f"{scaler.http_url}/readyz").status_code == 200
    assert httpx.get(f"{scaler.http_url}/nope").status_code == 404


def test_grpc_health_reports_serving_for_server_and_service(scaler: ScalerProcess) -> None:
    for service in ("", "externalscaler.ExternalScaler"):
        response = scaler.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_external_scaler_service(scaler: ScalerProcess) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(scaler.channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    services = {s.name for r in responses for s in r.list_services_response.service}
    assert "externalscaler.ExternalScaler" in services
    assert "grpc.health.v1.Health" in services


def test_unknown_method_is_unimplemented_not_unknown(scaler: ScalerProcess) -> None:
    call = scaler.channel.unary_unary("/externalscaler.ExternalScaler/NoSuchMethod")
    try:
        call(b"", timeout=5)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNIMPLEMENTED
    else:
        raise AssertionError("an unknown method must fail")


def test_log_lines_are_json_with_the_scaledobject_and_adapter(scaler: ScalerProcess) -> None:
    import json

    metadata = {"adapter": "prometheus", "serverAddress": "http://127.0.0.1:9", "query": "up", "threshold": "1"}
    try:
        scaler.metrics(metadata, name="logged-worker", namespace="billing")
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAVAILABLE
    lines = [json.loads(line) for line in scaler.logs().splitlines() if line.startswith("{")]
    assert lines, "the scaler logs JSON lines by default"
    failure = [x for x in lines if x.get("scaledobject") == "logged-worker"]
    assert failure, "the failed call is logged with its ScaledObject"
    assert failure[0]["namespace"] == "billing"
    assert failure[0]["adapter"] == "prometheus"
    assert failure[0]["method"] == "GetMetrics"
    assert failure[0]["code"] == "UNAVAILABLE"
    assert failure[0]["level"] == "warning"
