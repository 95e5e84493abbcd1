"""Push streams are as fresh as the push interval, whatever the cache TTL (the poller refreshes its source)."""

from __future__ import annotations

import time

from tests.fixtures.prometheus import Exporter, PrometheusServer, unique_metric
from tests.fixtures.scaler import StartScaler


def test_stream_sees_a_change_within_the_push_interval_even_with_a_long_cache_ttl(
    start_scaler: StartScaler, scraped: PrometheusServer, exporter: Exporter
) -> None:
    # With a 60 s TTL a poller reading through the cache would keep serving the old value for a minute.
    scaler = start_scaler(cache_ttl=60, push_interval=0.3)
    name = unique_metric("fresh")
    exporter.set(name, 0)
    scraped.wait_for_value(name, 0)
    metadata = {"adapter": "prometheus", "serverAddress": scraped.url, "query": name, "threshold": "5"}
    stream = scaler.stream_is_active(metadata)
    try:
        assert stream.next(timeout=10).result is False
        # KEDA's polls of the same source are served from the entry the poller keeps fresh.
        assert scaler.value(metadata) == 0
        exporter.set(name, 3)
        assert stream.next(timeout=10).result is True
    finally:
        stream.cancel()
    assert scaler.value(metadata) == 3


def test_polls_of_a_watched_source_are_served_from_the_pollers_entry(
    start_scaler: StartScaler, scraped: PrometheusServer
) -> None:
    scaler = start_scaler(cache_ttl=60, push_interval=0.5)
    metadata = {"adapter": "prometheus", "serverAddress": scraped.url, "query": "vector(1)", "threshold": "5"}
    started = time.monotonic()
    stream = scaler.stream_is_active(metadata)
    try:
        assert stream.next(timeout=10).result is True  # vector(1) > activation threshold 0
        for i in range(30):  # 30 ScaledObjects polling the watched source, like KEDA's GetMetrics + IsActive
            scaler.metrics(metadata, name=f"so-{i}")
            scaler.is_active(metadata, name=f"so-{i}")
        queries = scaler.metric("scaler_source_queries_total", adapter="prometheus")
        elapsed = time.monotonic() - started
        served = scaler.metric("scaler_cache_requests_total", result="hit") + scaler.metric(
            "scaler_cache_requests_total", result="coalesced"
        )
    finally:
        stream.cancel()
    assert served == 60, "every poll is answered from the poller's entry"
    assert 1 <= queries <= elapsed / 0.5 + 2, "only the poller queries: one per push interval"
