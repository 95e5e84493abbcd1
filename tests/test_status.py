"""/status.json and /status on a real scaler, after calls made as KEDA makes them, against a real Prometheus
and a real RabbitMQ: each trigger's reading, target, activity, replicas and last error; rows that leave
after series_ttl; the page's headers; no secret; bounded rows; `status_page: false`."""

from __future__ import annotations

import re
from typing import Any

import grpc
import httpx
import pytest

from scaler._generated import externalscaler_pb2 as pb
from tests.fixtures._util import wait_for
from tests.fixtures.prometheus import Exporter, PrometheusServer, unique_metric
from tests.fixtures.rabbitmq import RabbitBroker
from tests.fixtures.scaler import ScalerProcess, StartScaler, ref

HOSTILE = "<img src=x onerror=alert(1)>"


def keda_poll(
    scaler: ScalerProcess, metadata: dict[str, str], name: str, namespace: str = "shop", index: int | None = None
) -> Any:
    """What KEDA does for one trigger: GetMetricSpec, then GetMetrics with the returned name, then IsActive.

    KEDA strips its `s<index>-` prefix before GetMetrics; `index` sends it, as a client that keeps it would."""
    so = ref(metadata, name=name, namespace=namespace)
    spec = scaler.stub.GetMetricSpec(so, timeout=10)
    metric = spec.metricSpecs[0].metricName
    requested = metric if index is None else f"s{index}-{metric}"
    scaler.stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=so, metricName=requested), timeout=10)
    scaler.stub.IsActive(so, timeout=10)
    return metric


def status(scaler: ScalerProcess, **params: str) -> dict[str, Any]:
    response = httpx.get(f"{scaler.http_url}/status.json", params=params, timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    data: dict[str, Any] = response.json()
    return data


def rows_by_object(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["scaledobject"]: r for r in data["rows"]}


@pytest.fixture
def short_ttl_scaler(start_scaler: StartScaler) -> ScalerProcess:
    return start_scaler(series_ttl=3, cache_ttl=0.2, error_cache_ttl=0.2)


def test_status_json_shows_each_triggers_reading_target_activity_replicas_and_error(
    short_ttl_scaler: ScalerProcess, scraped: PrometheusServer, exporter: Exporter, rabbitmq: RabbitBroker
) -> None:
    scaler = short_ttl_scaler
    series = unique_metric("status_orders")
    exporter.set(series, 25)
    scraped.wait_for_value(series, 25)
    queue = rabbitmq.declare("status")
    rabbitmq.publish(queue, 23)
    rabbitmq.wait_for_messages(queue, 23)
    prom = {
        "adapter": "prometheus",
        "serverAddress": scraped.url,
        "query": series,
        "threshold": "10",
        "activationThreshold": "5",
    }
    rabbit = {
        "adapter": "rabbitmq",
        "host": rabbitmq.amqp_host(),
        "queueName": queue,
        "mode": "QueueLength",
        "value": "5",
    }
    ghost = {**rabbit, "queueName": "no-such-queue-status"}
    prom_metric = keda_poll(scaler, prom, "orders-api", index=1)
    rabbit_metric = keda_poll(scaler, rabbit, "orders-worker")
    with pytest.raises(grpc.RpcError) as failed:
        keda_poll(scaler, ghost, "ghost-worker")
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND

    data = status(scaler)
    rows = rows_by_object(data)
    assert set(rows) == {"orders-api", "orders-worker", "ghost-worker"}
    p, r, g = rows["orders-api"], rows["orders-worker"], rows["ghost-worker"]
    assert (p["namespace"], p["adapter"], p["metric"], p["trigger_index"]) == ("shop", "prometheus", prom_metric, 1)
    assert (p["value"], p["target"], p["activation_target"], p["active"], p["replicas"]) == (25, 10, 5, True, 3)
    assert series in p["source"] and "127.0.0.1" in p["source"]
    assert p["error"] is None and p["failing"] is False and p["stale"] is False and p["stream_open"] is False
    assert p["history"] == [25] and 0 <= p["age_seconds"] < 60
    # KEDA strips the `s<i>-` prefix: the index is unknown, not guessed.
    assert (r["metric"], r["trigger_index"]) == (rabbit_metric, None)
    assert (r["value"], r["target"], r["active"], r["replicas"]) == (23, 5, True, 5)
    assert r["source"].endswith(f"/{queue} (QueueLength)") and "guest:" not in r["source"]
    assert g["failing"] is True and g["value"] is None and g["replicas"] is None
    assert g["error"]["code"] == "NOT_FOUND" and "no-such-queue-status" in g["error"]["message"]
    summary = data["summary"]
    assert (summary["scaledobjects"], summary["triggers"], summary["sources"], summary["failing"]) == (3, 3, 3, 1)
    assert summary["errors_5m"] >= 1 and summary["open_streams"] == 0
    assert 0 <= summary["cache_hit_ratio"] <= 1
    assert data["namespaces"] == ["shop"]
    # The failed object's metadata parsed: its error sits on its trigger's row, named by the metric.
    assert g["metric"].startswith("rabbitmq-")

    # Filters: only with errors, and by namespace.
    assert [x["scaledobject"] for x in status(scaler, errors="1")["rows"]] == ["ghost-worker"]
    assert status(scaler, namespace="elsewhere")["rows"] == []
    assert len(status(scaler, namespace="shop")["rows"]) == 3

    # A changed reading shows on the next poll, and the history keeps both.
    exporter.set(series, 40)
    scraped.wait_for_value(series, 40)
    wait_for(
        lambda: keda_poll(scaler, prom, "orders-api") and rows_by_object(status(scaler))["orders-api"]["value"] == 40,
        20,
        "the new reading",
    )
    p = rows_by_object(status(scaler))["orders-api"]
    assert p["history"][0] == 25 and p["history"][-1] == 40 and p["replicas"] == 4

    # Nobody asks any more: the rows leave after series_ttl (3 s), like the /metrics series.
    wait_for(lambda: status(scaler)["rows"] == [], 30, "the rows to leave after series_ttl")
    assert status(scaler)["summary"]["scaledobjects"] == 0


def test_a_stream_shows_open_and_a_parse_error_gets_its_own_row(
    scaler: ScalerProcess, scraped: PrometheusServer, exporter: Exporter
) -> None:
    series = unique_metric("status_stream")
    exporter.set(series, 7)
    scraped.wait_for_value(series, 7)
    metadata = {"adapter": "prometheus", "serverAddress": scraped.url, "query": series, "threshold": "2"}
    stream = scaler.stream_is_active(metadata, name="streamed", namespace="push")
    try:
        assert stream.next().result is True
        row = rows_by_object(status(scaler, namespace="push"))["streamed"]
        assert (row["stream_open"], row["active"], row["value"]) == (True, True, 7)
        assert status(scaler)["summary"]["open_streams"] >= 1
    finally:
        stream.cancel()
    wait_for(
        lambda: not rows_by_object(status(scaler, namespace="push"))["streamed"]["stream_open"],
        10,
        "the stream to close",
    )

    broken = {"adapter": "prometheus", "serverAddress": scraped.url, "threshold": "2"}  # no query
    with pytest.raises(grpc.RpcError):
        scaler.stub.GetMetricSpec(ref(broken, name="broken", namespace="push"), timeout=10)
    row = rows_by_object(status(scaler, namespace="push"))["broken"]
    assert (row["metric"], row["adapter"], row["error"]["code"], row["failing"]) == (
        "",
        "prometheus",
        "INVALID_ARGUMENT",
        True,
    )
    assert "query" in row["error"]["message"]


def test_the_page_has_its_own_nonce_a_strict_csp_and_no_data_in_the_markup(
    scaler: ScalerProcess, scraped: PrometheusServer, exporter: Exporter
) -> None:
    series = unique_metric("status_hostile")
    exporter.set(series, 1)
    scraped.wait_for_value(series, 1)
    keda_poll(
        scaler, {"adapter": "prometheus", "serverAddress": scraped.url, "query": series, "threshold": "1"}, HOSTILE
    )
    first, second = (httpx.get(f"{scaler.http_url}/status", timeout=5) for _ in range(2))
    assert first.status_code == 200 and first.headers["content-type"] == "text/html; charset=utf-8"
    policy = first.headers["content-security-policy"]
    nonce = re.search(r"script-src 'nonce-([A-Za-z0-9_-]+)'", policy)
    assert nonce is not None and "default-src 'none'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy and first.headers["x-content-type-options"] == "nosniff"
    # Every script and style carries this response's nonce; the next response has another.
    assert re.findall(r"<script[^>]*>", first.text) == [f'<script nonce="{nonce.group(1)}">']
    assert nonce.group(1) not in second.headers["content-security-policy"]
    assert HOSTILE not in first.text and "onerror" not in first.text  # data only ever arrives as JSON
    assert "http://" not in first.text.replace("http://www.w3.org/2000/svg", "")  # no external asset
    # JSON carries the name as data (the browser test shows it renders as text).
    assert HOSTILE in rows_by_object(status(scaler))


def test_no_secret_on_the_status_page(start_scaler: StartScaler, scraped: PrometheusServer) -> None:
    scaler = start_scaler()
    password, token = "st4tus-s3cret-pw", "t0ken-n0t-sh0wn"
    served = {
        "adapter": "prometheus",
        "serverAddress": scraped.url.replace("http://", f"http://user:{password}@"),
        "query": "vector(3)",
        "threshold": "1",
    }
    # Basic credentials in the URL and a token in a custom header: both sent (basic and bearer exclude
    # each other, as in KEDA), neither may show.
    keda_poll(
        scaler,
        {**served, "authModes": "basic,custom", "customAuthHeader": "X-Token", "customAuthValue": token},
        "secretive",
    )
    dead = {**served, "serverAddress": f"http://user:{password}@127.0.0.1:1", "query": "vector(4)"}
    with pytest.raises(grpc.RpcError) as failed:  # its error message names the address
        keda_poll(scaler, dead, "secretive-dead")
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    data = status(scaler)
    text = httpx.get(f"{scaler.http_url}/status.json", timeout=5).text
    assert password not in text and token not in text
    rows = rows_by_object(data)
    assert rows["secretive"]["value"] == 3 and "127.0.0.1:1" in rows["secretive-dead"]["error"]["message"]


def test_rows_are_capped_and_the_page_can_be_turned_off(start_scaler: StartScaler, scraped: PrometheusServer) -> None:
    capped = start_scaler(status_max_rows=3)
    metadata = {"adapter": "prometheus", "serverAddress": scraped.url, "query": "vector(1)", "threshold": "1"}
    for i in range(5):
        keda_poll(capped, metadata, f"object-{i}")
    data = status(capped)
    assert len(data["rows"]) == 3 and data["summary"]["rows_refused"] >= 2

    off = start_scaler(status_page="false")
    keda_poll(off, metadata, "object")
    for path in ("/status", "/status.json"):
        assert httpx.get(f"{off.http_url}{path}", timeout=5).status_code == 404
    assert httpx.get(f"{off.http_url}/metrics", timeout=5).status_code == 200
