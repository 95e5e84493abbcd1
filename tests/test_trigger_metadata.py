"""How trigger metadata is read: adapter selection, xFromEnv, named connections, key-naming errors."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from tests.fixtures.prometheus import AUTH_PASSWORD, AUTH_USER, PrometheusServer
from tests.fixtures.scaler import ScalerProcess, StartScaler, denied


def test_missing_adapter_lists_the_registered_adapters(scaler: ScalerProcess) -> None:
    with pytest.raises(grpc.RpcError) as err:
        scaler.spec({"scalerAddress": "x:9090", "query": "up", "threshold": "1"})
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'adapter'" in err.value.details() and "prometheus" in err.value.details()


def test_unknown_adapter_lists_the_registered_adapters(scaler: ScalerProcess) -> None:
    with pytest.raises(grpc.RpcError) as err:
        scaler.spec({"adapter": "kafka", "query": "up", "threshold": "1"})
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown adapter 'kafka'" in err.value.details() and "prometheus" in err.value.details()


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"threshold": "abc"}, "threshold"),
        ({"threshold": "-2"}, "threshold"),
        ({"threshold": "NaN"}, "threshold"),
        ({"activationThreshold": "NaN"}, "activationThreshold"),
        ({"serverAddress": "ftp://x"}, "serverAddress"),
        ({"ignoreNullValues": "maybe"}, "ignoreNullValues"),
        ({"aggregation": "median"}, "aggregation"),
        ({"timeout": "-1"}, "timeout"),
        ({"timeout": "9" * 300}, "timeout"),  # found by the fuzzer: overflowed into INTERNAL
        ({"maxStaleness": "9" * 300 + "h"}, "maxStaleness"),
        # Found by the fuzzer: beyond int64, the MetricSpec's targetSize raised ValueError (INTERNAL).
        ({"threshold": "9223372036854775296"}, "threshold"),
        ({"threshold": "1e30"}, "threshold"),
        ({"customHeaders": "novalue"}, "customHeaders"),
        ({"authModes": "bearer"}, "bearerToken"),
    ],
)
def test_bad_metadata_is_invalid_argument_naming_the_key(
    scaler: ScalerProcess, override: dict[str, str], key: str
) -> None:
    metadata = {"adapter": "prometheus", "serverAddress": "http://127.0.0.1:9", "query": "up", "threshold": "1"}
    with pytest.raises(grpc.RpcError) as err:
        scaler.spec({**metadata, **override})
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"'{key}'" in err.value.details() or f"{key}:" in err.value.details()


def test_from_env_keys_are_read_as_the_plain_key(scaler: ScalerProcess, prometheus: PrometheusServer) -> None:
    # KEDA resolves `serverAddressFromEnv` from the workload's environment and sends the value under that key.
    metadata = {
        "adapter": "prometheus",
        "serverAddressFromEnv": prometheus.url,
        "query": "vector(12)",
        "thresholdFromEnv": "3",
    }
    assert scaler.spec(metadata).metricSpecs[0].targetSizeFloat == 3
    assert scaler.value(metadata) == 12


def test_a_literal_key_wins_over_its_from_env_twin(scaler: ScalerProcess, prometheus: PrometheusServer) -> None:
    # KEDA's typed config looks in the trigger's metadata first: both set is not an error.
    metadata = {
        "adapter": "prometheus",
        "serverAddress": prometheus.url,
        "serverAddressFromEnv": "http://127.0.0.1:1",
        "query": "vector(4)",
        "threshold": "1",
        "thresholdFromEnv": "9",
    }
    assert scaler.spec(metadata).metricSpecs[0].targetSizeFloat == 1
    assert scaler.value(metadata) == 4


@pytest.fixture
def connected_scaler(
    start_scaler: StartScaler, prometheus_with_auth: PrometheusServer, tmp_path: Path
) -> ScalerProcess:
    secret = tmp_path / "password"
    secret.write_text(AUTH_PASSWORD + "\n")
    config = f"""
connections:
  metrics:
    adapter: prometheus
    metadata: {{serverAddress: "{prometheus_with_auth.url}"}}
    fromFile: {{password: "{secret}"}}
    fromEnv: {{username: PROM_USER}}
"""
    return start_scaler(config=config, env={"PROM_USER": AUTH_USER})


def test_named_connection_supplies_endpoint_and_credentials(connected_scaler: ScalerProcess) -> None:
    metadata = {"adapter": "prometheus", "connection": "metrics", "query": "vector(5)", "threshold": "1"}
    assert connected_scaler.value(metadata) == 5
    assert AUTH_PASSWORD not in connected_scaler.logs()


def test_trigger_may_not_override_a_key_its_connection_sets(connected_scaler: ScalerProcess) -> None:
    metadata = {
        "adapter": "prometheus",
        "connection": "metrics",
        "serverAddress": "http://127.0.0.1:9",
        "query": "up",
        "threshold": "1",
    }
    details = denied(lambda: connected_scaler.spec(metadata))
    assert "'serverAddress'" in details and "metrics" in details


def test_unknown_connection_is_refused_without_listing_defined_ones(connected_scaler: ScalerProcess) -> None:
    details = denied(
        lambda: connected_scaler.spec({"adapter": "prometheus", "connection": "nope", "query": "up", "threshold": "1"})
    )
    assert "'connection'" in details and "'nope'" in details
    assert "metrics" not in details, "a refusal must not tell a tenant which connections exist"


def test_a_large_target_within_int64_is_accepted(scaler: ScalerProcess) -> None:
    # The other side of the int64 bound: 2^53 (exact as a float64) is still a target.
    metadata = {"adapter": "prometheus", "serverAddress": "http://127.0.0.1:9", "query": "up"}
    spec = scaler.spec({**metadata, "threshold": str(2**53)}).metricSpecs[0]
    assert spec.targetSize == 2**53 and spec.targetSizeFloat == 2.0**53


@pytest.mark.parametrize("timeout", ["9" * 400, "9223372036854775808", "-" + "9" * 30])
def test_a_duration_beyond_int64_milliseconds_is_invalid_not_internal(
    scaler: ScalerProcess, prometheus: PrometheusServer, timeout: str
) -> None:
    # Found by the fuzzer: 400 digits of milliseconds overflowed a float and came back as INTERNAL.
    metadata = {"adapter": "prometheus", "serverAddress": prometheus.url, "query": "up", "threshold": "1"}
    with pytest.raises(grpc.RpcError) as err:
        scaler.spec({**metadata, "timeout": timeout})
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'timeout'" in err.value.details() and "out of range" in err.value.details()
