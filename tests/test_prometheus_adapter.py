"""The Prometheus adapter through a real gRPC channel, against a real Prometheus server."""

from __future__ import annotations

import grpc
import pytest

from tests.fixtures._util import free_port
from tests.fixtures.prometheus import Exporter, PrometheusServer, unique_metric
from tests.fixtures.scaler import ScalerProcess, StartScaler


def meta(prometheus: PrometheusServer, query: str, **extra: str) -> dict[str, str]:
    return {
        "scalerAddress": "scaler.keda:9090",
        "adapter": "prometheus",
        "serverAddress": prometheus.url,
        "query": query,
        "threshold": "10",
        **extra,
    }


def test_get_metric_spec_names_the_metric_and_fills_both_target_fields(
    scaler: ScalerProcess, prometheus: PrometheusServer
) -> None:
    spec = scaler.spec(meta(prometheus, "vector(1)", threshold="2.5")).metricSpecs
    assert len(spec) == 1
    assert spec[0].targetSizeFloat == 2.5
    assert spec[0].targetSize == 2  # rounded half to even, as Python's round()
    name = spec[0].metricName
    assert name == "prometheus"  # KEDA's name for the same trigger
    assert all(c.islower() or c.isdigit() or c == "-" for c in name)
    # Stable: the same metadata gives the same name every time.
    assert scaler.spec(meta(prometheus, "vector(1)", threshold="2.5")).metricSpecs[0].metricName == name


def test_get_metrics_returns_float_and_rounded_int_under_the_name_keda_sent(
    scaler: ScalerProcess, prometheus: PrometheusServer
) -> None:
    response = scaler.metrics(meta(prometheus, "vector(41.7)"), metric_name="prometheus-whatever")
    [value] = response.metricValues
    assert value.metricName == "prometheus-whatever"
    assert value.metricValueFloat == pytest.approx(41.7)
    assert value.metricValue == 42


def test_a_reading_beyond_int64_is_exact_as_a_float_and_clamped_as_the_int(
    scaler: ScalerProcess, prometheus: PrometheusServer
) -> None:
    # Found in review after the fuzzer's int64 target: 1e30 made protobuf raise building metricValue (INTERNAL).
    [value] = scaler.metrics(meta(prometheus, "vector(1e30)")).metricValues
    assert value.metricValueFloat == 1e30
    assert value.metricValue == 2**63 - 1
    assert scaler.is_active(meta(prometheus, "vector(1e30)"))


def test_get_metrics_reads_a_scraped_series(
    scaler: ScalerProcess, scraped: PrometheusServer, exporter: Exporter
) -> None:
    name = unique_metric("queue_depth")
    exporter.set(name, 17, queue="orders")
    scraped.wait_for_value(name, 17)
    assert scaler.value(meta(scraped, f'{name}{{queue="orders"}}')) == 17


def test_reading_equal_to_activation_threshold_is_inactive(scaler: ScalerProcess, prometheus: PrometheusServer) -> None:
    assert scaler.is_active(meta(prometheus, "vector(5)", activationThreshold="5")) is False
    assert scaler.is_active(meta(prometheus, "vector(5.001)", activationThreshold="5")) is True
    assert scaler.is_active(meta(prometheus, "vector(0)")) is False
    assert scaler.is_active(meta(prometheus, "vector(0.5)")) is True


def test_several_series_without_aggregation_is_invalid_argument(
    scaler: ScalerProcess, prometheus: PrometheusServer
) -> None:
    query = 'label_replace(vector(1), "a", "x", "", "") or label_replace(vector(2), "a", "y", "", "")'
    with pytest.raises(grpc.RpcError) as err:
        scaler.metrics(meta(prometheus, query))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "query" in err.value.details() and "aggregation" in err.value.details()


@pytest.mark.parametrize(("aggregation", "expected"), [("sum", 3), ("max", 2), ("min", 1), ("avg", 1.5)])
def test_aggregation_combines_several_series(
    scaler: ScalerProcess, prometheus: PrometheusServer, aggregation: str, expected: float
) -> None:
    query = 'label_replace(vector(1), "a", "x", "", "") or label_replace(vector(2), "a", "y", "", "")'
    assert scaler.value(meta(prometheus, query, aggregation=aggregation)) == expected


def test_empty_result_reads_zero_by_default_and_not_found_when_nulls_are_not_ignored(
    scaler: ScalerProcess, prometheus: PrometheusServer
) -> None:
    absent = unique_metric("absent")
    assert scaler.value(meta(prometheus, absent)) == 0
    with pytest.raises(grpc.RpcError) as err:
        scaler.metrics(meta(prometheus, absent, ignoreNullValues="false"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no series" in err.value.details()


def test_nan_reads_zero_with_ignore_null_values_else_invalid_argument(
    scaler: ScalerProcess, prometheus: PrometheusServer
) -> None:
    assert scaler.value(meta(prometheus, "vector(NaN)")) == 0
    with pytest.raises(grpc.RpcError) as err:
        scaler.metrics(meta(prometheus, "vector(NaN)", ignoreNullValues="false"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "NaN" in err.value.details()


def test_negative_reading_is_sent_as_zero(scaler: ScalerProcess, prometheus: PrometheusServer) -> None:
    assert scaler.value(meta(prometheus, "vector(-3)")) == 0


def test_query_parameters_and_namespace_reach_prometheus(scaler: ScalerProcess, prometheus: PrometheusServer) -> None:
    # Prometheus rejects an unparsable `time` parameter: proof the parameter was sent.
    with pytest.raises(grpc.RpcError) as err:
        scaler.metrics(meta(prometheus, "vector(1)", queryParameters="time=not-a-time"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert scaler.value(meta(prometheus, "vector(3)", queryParameters="time=1700000000", namespace="team-a")) == 3


def test_bad_query_is_invalid_argument_naming_query(scaler: ScalerProcess, prometheus: PrometheusServer) -> None:
    with pytest.raises(grpc.RpcError) as err:
        scaler.metrics(meta(prometheus, "sum(rate(x[1m]"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'query'" in err.value.details()


def test_wrong_port_is_unavailable(scaler: ScalerProcess) -> None:
    metadata = {
        "adapter": "prometheus",
        "serverAddress": f"http://127.0.0.1:{free_port()}",
        "query": "up",
        "threshold": "1",
    }
    with pytest.raises(grpc.RpcError) as err:
        scaler.metrics(metadata)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "cannot reach Prometheus" in err.value.details()


def test_wrong_path_is_not_found(scaler: ScalerProcess, prometheus: PrometheusServer) -> None:
    with pytest.raises(grpc.RpcError) as err:
        scaler.metrics(meta(prometheus, "vector(1)", serverAddress=prometheus.url + "/not-prometheus"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "serverAddress" in err.value.details()


def test_slow_source_is_deadline_exceeded_within_the_trigger_timeout(scaler: ScalerProcess, silent_port: int) -> None:
    metadata = {
        "adapter": "prometheus",
        "serverAddress": f"http://127.0.0.1:{silent_port}",
        "query": "up",
        "threshold": "1",
        "timeout": "300",
    }
    with pytest.raises(grpc.RpcError) as err:
        scaler.metrics(metadata)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "0.3s" in err.value.details()


def test_basic_auth_reads_and_wrong_password_is_unauthenticated(
    scaler: ScalerProcess, prometheus_with_auth: PrometheusServer
) -> None:
    base = meta(prometheus_with_auth, "vector(7)", username="keda")
    assert scaler.value({**base, "password": "s3cret-pass"}) == 7
    with pytest.raises(grpc.RpcError) as err:
        scaler.metrics({**base, "password": "wrong-pass"})
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "wrong-pass" not in err.value.details()


def test_credentials_in_the_url_work_and_never_appear_in_errors_or_logs(
    start_scaler: StartScaler, prometheus_with_auth: PrometheusServer
) -> None:
    scaler = start_scaler()
    url = prometheus_with_auth.url.replace("http://", "http://keda:s3cret-pass@")
    assert scaler.value(meta(prometheus_with_auth, "vector(8)", serverAddress=url)) == 8
    bad = prometheus_with_auth.url.replace("http://", "http://keda:leaky-secret@")
    with pytest.raises(grpc.RpcError) as err:
        scaler.metrics(meta(prometheus_with_auth, "vector(8)", serverAddress=bad))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    scaler.stop()
    for text in (err.value.details(), scaler.logs()):
        assert "leaky-secret" not in text and "s3cret-pass" not in text


def test_bearer_token_is_sent_as_authorization_header(
    scaler: ScalerProcess, prometheus_with_auth: PrometheusServer
) -> None:
    # This Prometheus only accepts basic auth: a bearer token is refused, which proves it was sent as a header.
    with pytest.raises(grpc.RpcError) as err:
        scaler.metrics(meta(prometheus_with_auth, "vector(1)", bearerToken="tok-123456"))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "tok-123456" not in err.value.details()
