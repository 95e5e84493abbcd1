"""The gcp-pubsub adapter's Cloud Monitoring source, against a real Prometheus serving the mapped series.

There is no Cloud Monitoring emulator. Its PromQL API is Prometheus' HTTP API, so a real Prometheus,
scraping an exporter that publishes the Pub/Sub series under their Cloud Monitoring PromQL names with the
emulator's real backlog, stands in for it; a recording proxy in front shows the exact query sent.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import pytest

from tests.fixtures._util import wait_for
from tests.fixtures.prometheus import Exporter, PrometheusServer
from tests.fixtures.pubsub import (
    PROJECT,
    PubSubEmulator,
    RecordingProxy,
    TokenEndpoint,
    google_isolated_env,
    service_account_key,
)
from tests.fixtures.scaler import ScalerProcess, StartScaler

BACKLOG = "pubsub_googleapis_com:subscription_num_undelivered_messages"
AGE = "pubsub_googleapis_com:subscription_oldest_unacked_message_age"
TOPIC_BACKLOG = "pubsub_googleapis_com:topic_num_unacked_messages_by_region"


def meta(proxy: RecordingProxy, subscription: str = "", topic: str = "", **extra: str) -> dict[str, str]:
    found = {"subscriptionName": subscription} if subscription else {"topicName": topic}
    return {
        "adapter": "gcp-pubsub",
        "source": "monitoring",
        "monitoringAddress": proxy.url,
        **found,
        **extra,
    }


def short(path: str) -> str:
    return path.rsplit("/", 1)[1]


@pytest.fixture(scope="module")
def scaler(pubsub_scaler: ScalerProcess) -> ScalerProcess:
    return pubsub_scaler  # the shared emulator-aware scaler (tests/fixtures/pubsub.py)


def mirror_backlog(scaler: ScalerProcess, exporter: Exporter, scraped: PrometheusServer, subscription: str) -> float:
    """What Cloud Monitoring would export: the subscription's real backlog, read from the emulator."""
    backlog = scaler.value({"adapter": "gcp-pubsub", "source": "peek", "subscriptionName": subscription})
    labels = {"project_id": PROJECT, "subscription_id": short(subscription)}
    exporter.set(BACKLOG, backlog, **labels)
    scraped.wait_for_value(Exporter.series(BACKLOG, **labels), backlog)
    return backlog


def test_monitoring_reads_the_emulators_backlog_with_a_gauge_query(
    scaler: ScalerProcess,
    pubsub_emulator: PubSubEmulator,
    scraped: PrometheusServer,
    recording_proxy: RecordingProxy,
) -> None:
    topic = pubsub_emulator.topic()
    subscription = pubsub_emulator.subscription(topic)
    pubsub_emulator.publish(topic, 37)
    assert scraped.exporter is not None
    assert mirror_backlog(scaler, scraped.exporter, scraped, subscription) == 37
    assert scaler.value(meta(recording_proxy, subscription)) == 37
    assert recording_proxy.queries() == [
        f'last_over_time({BACKLOG}{{project_id="{PROJECT}",subscription_id="{short(subscription)}"}}[120s])'
    ]
    [(path, _, headers)] = recording_proxy.requests
    assert path == "/api/v1/query"
    # A loopback monitoringAddress is not Google's: no Google credentials are loaded or sent.
    assert "authorization" not in headers


@pytest.mark.parametrize(
    ("aggregation", "reducer", "expected"),
    [
        ("mean", "avg", 5.0),
        ("median", "quantile(0.5, ", 4.0),
        ("sum", "sum", 15.0),
        ("count", "count", 3.0),
        ("variance", "stdvar", 14 / 3),
        ("stddev", "stddev", (14 / 3) ** 0.5),
        ("percentile100", "quantile(1, ", 8.0),
        ("percentile0", "quantile(0, ", 3.0),
    ],
)
def test_kedas_aggregations_reduce_the_aligned_series(  # noqa: PLR0917 (fixtures and parameters)
    scaler: ScalerProcess,
    exporter: Exporter,
    scraped: PrometheusServer,
    recording_proxy: RecordingProxy,
    topic: str,
    aggregation: str,
    reducer: str,
    expected: float,
) -> None:
    # KEDA: `group_by [], <aggregation>(value)` over the series of the resource (one per region for a
    # topic), each aligned to its latest point in the horizon, which is 5m with an aggregation.
    for region, value in (("europe-west1", 3), ("us-central1", 4), ("asia-east1", 8)):
        labels = {"project_id": PROJECT, "topic_id": short(topic), "region": region}
        exporter.set(TOPIC_BACKLOG, value, **labels)
        scraped.wait_for_value(Exporter.series(TOPIC_BACKLOG, **labels), value)
    assert scaler.value(meta(recording_proxy, topic=topic, aggregation=aggregation)) == pytest.approx(expected, 1e-3)
    aligned = f'last_over_time({TOPIC_BACKLOG}{{project_id="{PROJECT}",topic_id="{short(topic)}"}}[300s])'
    opened = reducer if reducer.endswith(" ") else f"{reducer}("
    assert recording_proxy.queries() == [f"{opened}{aligned})"]


def test_distribution_modes_read_their_histogram_as_keda_reads_them(
    scaler: ScalerProcess, recording_proxy: RecordingProxy, topic: str
) -> None:
    sizes = "pubsub_googleapis_com:topic_message_sizes"
    matchers = f'{{project_id="{PROJECT}",topic_id="{short(topic)}"}}'
    # A distribution point is no number: KEDA fails on it without an aggregation, and so does this scaler.
    with pytest.raises(grpc.RpcError) as err:
        scaler.metrics(meta(recording_proxy, topic=topic, mode="MessageSizes"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'aggregation'" in err.value.details()
    for aggregation in ("mean", "percentile95", "count"):
        with pytest.raises(grpc.RpcError):  # nothing exported: absent, and the query shows what is read
            scaler.metrics(meta(recording_proxy, topic=topic, mode="MessageSizes", aggregation=aggregation))
    assert recording_proxy.queries() == [
        f"sum(increase({sizes}_sum{matchers}[300s])) / sum(increase({sizes}_count{matchers}[300s]))",
        f"histogram_quantile(0.95, sum by (le) (increase({sizes}_bucket{matchers}[300s])))",
        f"sum(increase({sizes}_count{matchers}[300s]))",
    ]


def test_any_mode_reads_its_snake_cased_metric(
    scaler: ScalerProcess,
    exporter: Exporter,
    scraped: PrometheusServer,
    recording_proxy: RecordingProxy,
    subscription: str,
) -> None:
    metric = "pubsub_googleapis_com:subscription_backlog_bytes"
    labels = {"project_id": PROJECT, "subscription_id": short(subscription)}
    exporter.set(metric, 4096, **labels)
    scraped.wait_for_value(Exporter.series(metric, **labels), 4096)
    assert scaler.value(meta(recording_proxy, subscription, mode="BacklogBytes", timeHorizon="1m")) == 4096
    assert recording_proxy.queries() == [
        f'last_over_time({metric}{{project_id="{PROJECT}",subscription_id="{short(subscription)}"}}[60s])'
    ]


def test_oldest_unacked_message_age_reads_its_series(
    scaler: ScalerProcess,
    exporter: Exporter,
    scraped: PrometheusServer,
    recording_proxy: RecordingProxy,
    subscription: str,
) -> None:
    labels = {"project_id": PROJECT, "subscription_id": short(subscription)}
    exporter.set(AGE, 42, **labels)
    scraped.wait_for_value(Exporter.series(AGE, **labels), 42)
    name = short(subscription)
    assert scaler.value(meta(recording_proxy, name, projectId=PROJECT, mode="OldestUnackedMessageAge")) == 42
    assert recording_proxy.queries() == [
        f'last_over_time({AGE}{{project_id="{PROJECT}",subscription_id="{name}"}}[120s])'
    ]


def test_topic_sums_its_regions(
    scaler: ScalerProcess,
    exporter: Exporter,
    scraped: PrometheusServer,
    recording_proxy: RecordingProxy,
    topic: str,
) -> None:
    for region, value in (("europe-west1", 3), ("us-central1", 4)):
        labels = {"project_id": PROJECT, "topic_id": short(topic), "region": region}
        exporter.set(TOPIC_BACKLOG, value, **labels)
        scraped.wait_for_value(Exporter.series(TOPIC_BACKLOG, **labels), value)
    assert scaler.value(meta(recording_proxy, topic=topic)) == 7
    assert recording_proxy.queries() == [
        f'sum(last_over_time({TOPIC_BACKLOG}{{project_id="{PROJECT}",topic_id="{short(topic)}"}}[120s]))'
    ]


def test_absent_series_is_not_found_saying_so(scaler: ScalerProcess, recording_proxy: RecordingProxy) -> None:
    with pytest.raises(grpc.RpcError) as err:
        scaler.metrics(meta(recording_proxy, f"projects/{PROJECT}/subscriptions/never-exported"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "absent" in err.value.details() and "valueIfNull" in err.value.details()


def test_absent_series_reads_value_if_null(scaler: ScalerProcess, recording_proxy: RecordingProxy) -> None:
    subscription = f"projects/{PROJECT}/subscriptions/never-exported-either"
    assert scaler.value(meta(recording_proxy, subscription, valueIfNull="7")) == 7


def test_last_good_reading_stands_in_for_an_absent_series_until_stale(
    scaler: ScalerProcess,
    exporter: Exporter,
    scraped: PrometheusServer,
    recording_proxy: RecordingProxy,
    subscription: str,
) -> None:
    labels = {"project_id": PROJECT, "subscription_id": short(subscription)}
    series = Exporter.series(BACKLOG, **labels)
    exporter.set(BACKLOG, 11, **labels)
    scraped.wait_for_value(series, 11)
    lenient = meta(recording_proxy, subscription, timeHorizon="2s", staleness="10m")
    strict = meta(recording_proxy, subscription, timeHorizon="2s", staleness="0s")
    assert scaler.value(lenient) == 11

    exporter.remove(BACKLOG, **labels)
    wait_for(lambda: not scraped.query(f"last_over_time({series}[2s])"), 15, "the series to disappear")
    assert scaler.value(lenient) == 11  # the last good reading, within its staleness
    with pytest.raises(grpc.RpcError) as err:
        scaler.metrics(strict)  # same series, no staleness allowed
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "absent" in err.value.details()


def test_activation_peeks_while_the_metric_comes_from_monitoring(
    scaler: ScalerProcess, pubsub_emulator: PubSubEmulator, recording_proxy: RecordingProxy, topic: str
) -> None:
    subscription = pubsub_emulator.subscription(topic)
    metadata = meta(recording_proxy, subscription, valueIfNull="0", activationSource="peek")
    assert scaler.is_active(metadata) is False
    pubsub_emulator.publish(topic, 1)
    time.sleep(0.3)
    # Cloud Monitoring has not seen the message yet (the series is absent: 0) but the peek has.
    assert scaler.value(metadata) == 0
    assert scaler.is_active(metadata) is True
    stream = scaler.stream_is_active(metadata)
    try:
        assert stream.next(timeout=10).result is True
    finally:
        stream.cancel()
    # The peek released the message: a consumer still gets it.
    assert pubsub_emulator.ack(subscription, 1) == 1


def test_activation_peek_keeps_the_dead_letter_safeguard(
    scaler: ScalerProcess, pubsub_emulator: PubSubEmulator, recording_proxy: RecordingProxy, topic: str
) -> None:
    dead = pubsub_emulator.topic("dead")
    subscription = pubsub_emulator.subscription(
        topic, dead_letter_policy={"dead_letter_topic": dead, "max_delivery_attempts": 5}
    )
    metadata = meta(recording_proxy, subscription, valueIfNull="0", activationSource="peek")
    assert scaler.value(metadata) == 0  # Monitoring alone is harmless
    with pytest.raises(grpc.RpcError) as err:
        scaler.is_active(metadata)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "dead-letter" in err.value.details()


# --- credentials: google-auth for Google's endpoint only --------------------------------------


@pytest.fixture
def broken_credentials_file(tmp_path: Path) -> str:
    path = tmp_path / "adc.json"
    path.write_text("this is not a credentials document")
    return str(path)


def test_google_endpoint_loads_google_credentials(start_scaler: StartScaler, broken_credentials_file: str) -> None:
    # No monitoringAddress: the endpoint is monitoring.googleapis.com, so ADC is loaded first. The
    # broken file makes that fail before any connection is attempted (no traffic leaves the machine).
    process = start_scaler(env=google_isolated_env(GOOGLE_APPLICATION_CREDENTIALS=broken_credentials_file))
    metadata = {
        "adapter": "gcp-pubsub",
        "source": "monitoring",
        "subscriptionName": f"projects/{PROJECT}/subscriptions/orders",
    }
    with pytest.raises(grpc.RpcError) as err:
        process.metrics(metadata)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "Application Default Credentials" in err.value.details()
    assert process.metric("scaler_source_queries_total", adapter="gcp-pubsub", outcome="unauthenticated") == 1


def test_loopback_endpoint_never_loads_google_credentials(
    start_scaler: StartScaler, broken_credentials_file: str, recording_proxy: RecordingProxy
) -> None:
    process = start_scaler(env=google_isolated_env(GOOGLE_APPLICATION_CREDENTIALS=broken_credentials_file))
    metadata = meta(recording_proxy, f"projects/{PROJECT}/subscriptions/not-exported", valueIfNull="3")
    assert process.value(metadata) == 3  # the broken ADC file was never read
    assert all("authorization" not in headers for _, _, headers in recording_proxy.requests)


# The second is too deeply nested for Python's JSON parser (RecursionError, not a decoding error), and still
# under the metadata size limit (max_metadata_bytes, 64 KiB).
@pytest.mark.parametrize("secret", ["-----BEGIN PRIVATE KEY-----not-json", "[" * 60_000 + "not-json"])
def test_inline_credentials_that_are_not_json_are_unauthenticated_without_echo(
    start_scaler: StartScaler, secret: str
) -> None:
    process = start_scaler(env=google_isolated_env())
    metadata = {
        "adapter": "gcp-pubsub",
        "source": "monitoring",
        "subscriptionName": f"projects/{PROJECT}/subscriptions/orders",
        "credentialsFromEnv": secret,
    }
    with pytest.raises(grpc.RpcError) as err:
        process.metrics(metadata)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "credentials" in err.value.details()
    assert secret not in err.value.details()
    assert "not-json" not in process.logs()


def test_peek_on_google_loads_google_credentials_before_connecting(
    start_scaler: StartScaler, broken_credentials_file: str
) -> None:
    # No PUBSUB_EMULATOR_HOST: a peek goes to pubsub.googleapis.com, so credentials are loaded first.
    process = start_scaler(env=google_isolated_env(GOOGLE_APPLICATION_CREDENTIALS=broken_credentials_file))
    metadata = {
        "adapter": "gcp-pubsub",
        "source": "peek",
        "subscriptionName": f"projects/{PROJECT}/subscriptions/orders",
    }
    with pytest.raises(grpc.RpcError) as err:
        process.metrics(metadata)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "Application Default Credentials" in err.value.details()


def test_a_refused_token_exchange_from_a_credentials_file_is_unauthenticated(
    start_scaler: StartScaler, token_endpoint: TokenEndpoint, tmp_path: Path
) -> None:
    # Workload identity federation (external_account) is for credentialsFile / ADC, the operator's documents.
    subject = tmp_path / "subject-token"
    subject.write_text("a-subject-token")
    key = tmp_path / "federation.json"
    key.write_text(
        json.dumps(
            {
                "type": "external_account",
                "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/x",
                "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                "token_url": token_endpoint.url,
                "credential_source": {"file": str(subject)},
            }
        )
    )
    process = start_scaler(env=google_isolated_env(), trigger_file_dirs=str(tmp_path))
    metadata = {
        "adapter": "gcp-pubsub",
        "source": "monitoring",
        "subscriptionName": f"projects/{PROJECT}/subscriptions/orders",
        "credentialsFile": str(key),
    }
    with pytest.raises(grpc.RpcError) as err:
        process.metrics(metadata)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, err.value.details()
    assert len(token_endpoint.bodies) == 1 and "a-subject-token" in token_endpoint.bodies[0]


def test_a_short_name_takes_the_credentials_project(
    scaler: ScalerProcess, exporter: Exporter, scraped: PrometheusServer, recording_proxy: RecordingProxy
) -> None:
    key, _ = service_account_key("k-project", "https://oauth2.googleapis.com/token")  # project_id: PROJECT
    labels = {"project_id": PROJECT, "subscription_id": "short-named-sub"}
    exporter.set(BACKLOG, 6, **labels)
    scraped.wait_for_value(Exporter.series(BACKLOG, **labels), 6)
    assert scaler.value(meta(recording_proxy, "short-named-sub", credentials=key)) == 6
    assert recording_proxy.queries() == [
        f'last_over_time({BACKLOG}{{project_id="{PROJECT}",subscription_id="short-named-sub"}}[120s])'
    ]


def test_a_short_name_without_credentials_takes_the_ambient_project(
    start_scaler: StartScaler, exporter: Exporter, scraped: PrometheusServer, recording_proxy: RecordingProxy
) -> None:
    labels = {"project_id": "ambient-project", "subscription_id": "ambient-sub"}
    exporter.set(BACKLOG, 8, **labels)
    scraped.wait_for_value(Exporter.series(BACKLOG, **labels), 8)
    ambient = start_scaler(env=google_isolated_env(GOOGLE_CLOUD_PROJECT="ambient-project"))
    assert ambient.value(meta(recording_proxy, "ambient-sub")) == 8
    assert recording_proxy.queries() == [
        f'last_over_time({BACKLOG}{{project_id="ambient-project",subscription_id="ambient-sub"}}[120s])'
    ]
    # No project anywhere (and no metadata server): an error naming projectId, as KEDA's fails to read.
    bare = start_scaler(env=google_isolated_env())
    with pytest.raises(grpc.RpcError) as err:
        bare.metrics(meta(recording_proxy, "ambient-sub"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'projectId'" in err.value.details()
