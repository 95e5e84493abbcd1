"""`onSourceError: lastKnown` serves the last good reading, visibly, up to `maxStaleness`; `fail` is the default."""

from __future__ import annotations

import time

import grpc
import pytest

from tests.fixtures.prometheus import PrometheusServer
from tests.fixtures.scaler import ScalerProcess, StartScaler


def prom(server: PrometheusServer, query: str, **extra: str) -> dict[str, str]:
    return {"adapter": "prometheus", "serverAddress": server.url, "query": query, "threshold": "1", **extra}


@pytest.fixture
def fast_scaler(start_scaler: StartScaler) -> ScalerProcess:
    return start_scaler(cache_ttl=0.2, error_cache_ttl=0.2, log_format="text")


def test_last_known_serves_the_last_reading_when_prometheus_dies_and_shows_it(
    fast_scaler: ScalerProcess, own_prometheus: PrometheusServer
) -> None:
    metadata = prom(own_prometheus, "vector(7)", onSourceError="lastKnown", maxStaleness="1m")
    assert fast_scaler.value(metadata, name="orders") == 7
    assert fast_scaler.metric("scaler_scaledobject_stale", scaledobject="orders") == 0
    own_prometheus.kill()
    time.sleep(0.3)  # past the cache TTL: the next read goes to the (dead) source

    assert fast_scaler.value(metadata, name="orders") == 7
    assert fast_scaler.is_active(metadata, name="orders") is True
    assert fast_scaler.metric("scaler_stale_readings_served_total", adapter="prometheus") >= 2
    assert fast_scaler.metric("scaler_scaledobject_stale", namespace="default", scaledobject="orders") == 1
    assert fast_scaler.metric("scaler_scaledobject_reading_age_seconds", scaledobject="orders") > 0.2
    logs = fast_scaler.logs()
    assert "onSourceError: lastKnown" in logs and "scaledobject=orders" in logs and "cannot reach Prometheus" in logs

    own_prometheus.restart()
    time.sleep(0.3)
    assert fast_scaler.value(metadata, name="orders") == 7
    assert fast_scaler.metric("scaler_scaledobject_stale", scaledobject="orders") == 0


def test_default_policy_fails_with_unavailable_so_kedas_fallback_applies(
    fast_scaler: ScalerProcess, own_prometheus: PrometheusServer
) -> None:
    metadata = prom(own_prometheus, "vector(3)")
    assert fast_scaler.value(metadata) == 3
    own_prometheus.kill()
    time.sleep(0.3)
    for call in (lambda: fast_scaler.metrics(metadata), lambda: fast_scaler.is_active(metadata)):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert fast_scaler.metric("scaler_stale_readings_served_total") == 0


def test_last_known_stops_past_max_staleness(fast_scaler: ScalerProcess, own_prometheus: PrometheusServer) -> None:
    metadata = prom(own_prometheus, "vector(5)", onSourceError="lastKnown", maxStaleness="2s")
    assert fast_scaler.value(metadata) == 5
    read_at = time.monotonic()
    own_prometheus.kill()
    time.sleep(0.3)
    assert fast_scaler.value(metadata) == 5
    time.sleep(max(0.0, 2.3 - (time.monotonic() - read_at)))
    with pytest.raises(grpc.RpcError) as err:
        fast_scaler.metrics(metadata)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_last_known_never_hides_a_bad_trigger_or_a_policy_refusal(
    fast_scaler: ScalerProcess, own_prometheus: PrometheusServer
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        fast_scaler.metrics(prom(own_prometheus, "sum(", onSourceError="lastKnown"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        fast_scaler.spec(prom(own_prometheus, "vector(1)", onSourceError="sometimes"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "onSourceError" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        fast_scaler.metrics(
            {**prom(own_prometheus, "vector(1)", onSourceError="lastKnown"), "serverAddress": "http://169.254.169.254"}
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
