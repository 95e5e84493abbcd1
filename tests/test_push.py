"""StreamIsActive and StreamMetricSpec over a real channel, driven by a real Prometheus scraping an exporter."""

from __future__ import annotations

import time

from tests.fixtures.prometheus import Exporter, PrometheusServer, unique_metric
from tests.fixtures.scaler import ScalerProcess


def meta(prometheus: PrometheusServer, query: str, **extra: str) -> dict[str, str]:
    return {"adapter": "prometheus", "serverAddress": prometheus.url, "query": query, "threshold": "5", **extra}


def test_stream_is_active_sends_current_state_at_once_then_flips_when_the_source_changes(
    scaler: ScalerProcess, scraped: PrometheusServer, exporter: Exporter
) -> None:
    name = unique_metric("backlog")
    exporter.set(name, 0)
    scraped.wait_for_value(name, 0)
    stream = scaler.stream_is_active(meta(scraped, name))
    try:
        assert stream.next(timeout=10).result is False
        exporter.set(name, 3)
        assert stream.next(timeout=15).result is True
        exporter.set(name, 0)
        assert stream.next(timeout=15).result is False
    finally:
        stream.cancel()
    assert [m.result for m in stream.received] == [False, True, False]


def test_stream_metric_spec_first_message_equals_get_metric_spec(
    scaler: ScalerProcess, prometheus: PrometheusServer
) -> None:
    metadata = meta(prometheus, "vector(2)", threshold="7.5")
    stream = scaler.stream_metric_spec(metadata)
    try:
        first = stream.next(timeout=10)
    finally:
        stream.cancel()
    assert first == scaler.spec(metadata)
    assert first.metricSpecs[0].targetSizeFloat == 7.5


def test_streams_on_one_source_share_one_poller(scaler: ScalerProcess, prometheus: PrometheusServer) -> None:
    metadata = meta(prometheus, "vector(9)")
    streams = [scaler.stream_is_active(metadata, name=f"so-{i}") for i in range(5)]
    try:
        for stream in streams:
            assert stream.next(timeout=10).result is True
        assert scaler.metric("scaler_source_pollers") == 1
        assert scaler.metric("scaler_push_streams_open", method="StreamIsActive") == 5
    finally:
        for stream in streams:
            stream.cancel()
    # The last stream gone, the poller stops at once.
    deadline = time.monotonic() + 10
    while scaler.metric("scaler_source_pollers") != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert scaler.metric("scaler_source_pollers") == 0
    assert scaler.metric("scaler_push_streams_open", method="StreamIsActive") == 0


def test_stream_is_active_with_invalid_metadata_ends_with_invalid_argument(scaler: ScalerProcess) -> None:
    stream = scaler.stream_is_active({"adapter": "prometheus", "query": "up", "threshold": "1"})
    assert stream.ended.wait(10)
    assert stream.error is not None
    assert stream.error.code().name == "INVALID_ARGUMENT"
    assert "serverAddress" in stream.error.details()
