"""RabbitMQ trigger metadata: KEDA's names, defaults and validation, answered over a real gRPC channel.

GetMetricSpec needs no broker (kedacore/keda#8056), so none of these tests does either.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from tests.fixtures.scaler import ScalerProcess

AMQP = "amqp://guest:guest@rabbitmq.example:5672/"
HTTP = "http://guest:guest@rabbitmq.example:15672/"


def meta(**extra: str) -> dict[str, str]:
    return {"scalerAddress": "scaler.keda:9090", "adapter": "rabbitmq", "host": AMQP, "queueName": "orders", **extra}


@pytest.fixture(scope="module")
def scaler() -> Iterator[ScalerProcess]:
    """The module's scaler; triggers may name files under /tls (none exist: these checks never read them)."""
    process = ScalerProcess(["--trigger-file-dirs", "/tls"])
    yield process
    process.stop()


def invalid(scaler: ScalerProcess, metadata: dict[str, str]) -> str:
    with pytest.raises(grpc.RpcError) as err:
        scaler.spec(metadata)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    return str(err.value.details())


def test_spec_names_the_metric_after_the_queue_and_uses_value_as_target(scaler: ScalerProcess) -> None:
    [spec] = scaler.spec(meta(mode="QueueLength", value="7.5")).metricSpecs
    assert spec.metricName == "rabbitmq-orders"
    assert spec.targetSizeFloat == 7.5
    assert spec.targetSize == 8


def test_no_mode_and_no_value_defaults_to_queue_length_20_as_in_keda(scaler: ScalerProcess) -> None:
    [spec] = scaler.spec(meta()).metricSpecs
    assert spec.targetSizeFloat == 20


def test_deprecated_queue_length_still_sets_the_target(scaler: ScalerProcess) -> None:
    [spec] = scaler.spec(meta(queueLength="12")).metricSpecs
    assert spec.targetSizeFloat == 12


def test_host_from_env_is_read_as_host(scaler: ScalerProcess) -> None:
    metadata = meta(mode="QueueLength", value="5")
    metadata["hostFromEnv"] = metadata.pop("host")
    assert scaler.spec(metadata).metricSpecs[0].targetSizeFloat == 5


@pytest.mark.parametrize(
    ("extra", "key", "words"),
    [
        ({"mode": "QueueLength"}, "value", "required"),
        ({"value": "5"}, "mode", "required"),
        ({"mode": "Backlog", "value": "5"}, "mode", "QueueLength"),
        ({"mode": "QueueLength", "value": "0"}, "value", "greater than 0"),
        ({"queueLength": "5", "mode": "QueueLength", "value": "5"}, "queueLength", "deprecated"),
        ({"mode": "MessageRate", "value": "5"}, "mode", "management API"),
        ({"mode": "DeliverGetRate", "value": "5"}, "mode", "management API"),
        ({"mode": "PublishedToDeliveredRatio", "value": "1.1"}, "mode", "management API"),
        ({"mode": "ExpectedQueueConsumptionTime", "value": "30"}, "mode", "management API"),
        ({"useRegex": "true"}, "useRegex", "management API"),
        ({"excludeUnacknowledged": "true"}, "excludeUnacknowledged", "management API"),
        ({"protocol": "http"}, "protocol", "amqp://"),
        ({"protocol": "stomp"}, "protocol", "amqp"),
        ({"host": "kafka://broker:9092"}, "host", "scheme"),
        ({"host": "amqp://"}, "host", "host"),
        ({"host": "amqp://rabbit:99999/"}, "host", "port"),
        ({"username": "keda"}, "username", "together"),
        ({"host": "amqps://rabbit:5671/", "certFile": "/tls/tls.crt"}, "certFile", "together"),
        ({"caFile": "/tls/ca.crt"}, "certFile", "amqps://"),
        ({"host": HTTP, "useRegex": "true", "pageSize": "0"}, "pageSize", "greater than or equal to 1"),
        ({"host": HTTP, "useRegex": "true", "operation": "min"}, "operation", "sum"),
        ({"timeout": "-5"}, "timeout", "negative"),
        ({"queueName": ""}, "queueName", "is required"),  # blank is absent, as in KEDA
    ],
)
def test_invalid_metadata_names_the_key(scaler: ScalerProcess, extra: dict[str, str], key: str, words: str) -> None:
    details = invalid(scaler, meta(**extra))
    assert f"'{key}'" in details
    assert words in details


def test_missing_queue_name_says_it_is_required(scaler: ScalerProcess) -> None:
    metadata = meta()
    del metadata["queueName"]
    details = invalid(scaler, metadata)
    assert "'queueName'" in details and "required" in details


def test_rate_modes_are_accepted_with_an_http_host(scaler: ScalerProcess) -> None:
    for mode in ("MessageRate", "DeliverGetRate", "PublishedToDeliveredRatio", "ExpectedQueueConsumptionTime"):
        [spec] = scaler.spec(meta(host=HTTP, mode=mode, value="3")).metricSpecs
        assert spec.targetSizeFloat == 3


def test_a_password_never_appears_in_an_error(scaler: ScalerProcess) -> None:
    details = invalid(scaler, meta(host="kafka://keda:Pa55-w0rd-xyz@rabbit:5672/"))
    assert "Pa55-w0rd-xyz" not in details
    details = invalid(scaler, meta(username="", password="Pa55-w0rd-xyz"))
    assert "Pa55-w0rd-xyz" not in details
    assert "Pa55-w0rd-xyz" not in scaler.logs()
