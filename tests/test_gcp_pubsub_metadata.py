"""gcp-pubsub trigger metadata through a real gRPC channel: the spec, defaults, and errors naming the key."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from tests.fixtures.pubsub import PROJECT, PubSubEmulator, google_isolated_env
from tests.fixtures.scaler import ScalerProcess

SUBSCRIPTION = f"projects/{PROJECT}/subscriptions/orders-sub"


@pytest.fixture(scope="module")
def scaler(pubsub_emulator: PubSubEmulator) -> Iterator[ScalerProcess]:
    # Triggers may name files under /keys (none exist: these checks never read them).
    process = ScalerProcess(["--trigger-file-dirs", "/keys"], env=google_isolated_env(pubsub_emulator.host))
    yield process
    process.stop()


def meta(**extra: str) -> dict[str, str]:
    return {"adapter": "gcp-pubsub", "subscriptionName": SUBSCRIPTION, **extra}


def test_spec_names_the_subscription_and_defaults_the_target_to_ten(scaler: ScalerProcess) -> None:
    [spec] = scaler.spec(meta()).metricSpecs
    assert spec.metricName == f"gcp-ps-projects-{PROJECT}-subscriptions-orders-sub"  # KEDA's name
    assert spec.targetSizeFloat == 10
    assert spec.targetSize == 10
    [spec] = scaler.spec(meta(value="2.5")).metricSpecs
    assert spec.targetSizeFloat == 2.5


def test_spec_never_needs_pubsub(scaler: ScalerProcess) -> None:
    # The subscription does not exist, and no Pub/Sub call is made for the spec.
    [spec] = scaler.spec(meta(subscriptionName=f"projects/{PROJECT}/subscriptions/absent-sub")).metricSpecs
    assert spec.metricName == f"gcp-ps-projects-{PROJECT}-subscriptions-absent-sub"


@pytest.mark.parametrize(
    ("metadata", "key", "fragment"),
    [
        ({"adapter": "gcp-pubsub"}, "subscriptionName", "exactly one"),
        (meta(topicName=f"projects/{PROJECT}/topics/orders"), "subscriptionName", "exactly one"),
        (meta(subscriptionName=f"projects/{PROJECT}/topics/orders"), "subscriptionName", "path to topics"),
        (meta(subscriptionName="a/b"), "subscriptionName", "short name or projects/"),
        (meta(subscriptionName=f"projects/{PROJECT}/subscriptions/ab"), "subscriptionName", "not a valid name"),
        (meta(mode="message-rate"), "mode", "CamelCase"),
        (meta(aggregation="p99"), "aggregation", "percentile0 to percentile100"),
        (meta(subscriptionSize="7"), "subscriptionSize", "v2.20"),
        (meta(topicName="", subscriptionName="", mode="MessageSizes", aggregation="stddev"), "subscriptionName", "one"),
        (meta(timeHorizon="two minutes"), "timeHorizon", "duration"),
        (meta(timeHorizon="-1s"), "timeHorizon", "negative"),
        (meta(staleness="-1m"), "staleness", "negative"),
        (meta(source="metrics"), "source", "monitoring"),
        (meta(activationSource="monitoring"), "activationSource", "peek"),
        (meta(peekLimit="0"), "peekLimit", "greater than 0"),
        (meta(value="0"), "value", "greater than 0"),
        (meta(activationValue="NaN"), "activationValue", "number"),
        (meta(monitoringAddress="ftp://example"), "monitoringAddress", "http"),
        (meta(monitoringAddress="http://user:pw@127.0.0.1:9090"), "monitoringAddress", "credentials"),
        (meta(credentials='{"type": "service_account"}', credentialsFile="/keys/key.json"), "credentials", "only one"),
        (meta(credentials='{"type": "external_account"}'), "credentials", "service account key"),
    ],
)
def test_bad_metadata_is_invalid_argument_naming_the_key(
    scaler: ScalerProcess, metadata: dict[str, str], key: str, fragment: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        scaler.spec(metadata)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"'{key}'" in err.value.details()
    assert fragment in err.value.details()
    assert "pw" not in err.value.details()
