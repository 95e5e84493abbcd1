"""Egress policy for the broker adapters: RabbitMQ `host` and Pub/Sub `monitoringAddress`.

The same policy as tests/test_egress.py checks Prometheus' serverAddress with; here through the other two
adapters' address keys, end to end against the real broker on 127.0.0.1 and a real Prometheus standing in
for Cloud Monitoring's PromQL API. Forbidden addresses are refused before any connection, so nothing
here sends a packet off 127.0.0.1.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.fixtures.prometheus import PrometheusServer
from tests.fixtures.pubsub import PROJECT, TokenEndpoint, google_isolated_env, service_account_key
from tests.fixtures.rabbitmq import RabbitBroker
from tests.fixtures.scaler import ScalerProcess, StartScaler, denied, error_of

BACKLOG = "pubsub_googleapis_com:subscription_num_undelivered_messages"


def rabbit(host: str, queue: str = "orders", **extra: str) -> dict[str, str]:
    return {"adapter": "rabbitmq", "host": host, "queueName": queue, "mode": "QueueLength", "value": "5", **extra}


def pubsub(monitoring_address: str | None, subscription: str = "orders-sub", **extra: str) -> dict[str, str]:
    address = {} if monitoring_address is None else {"monitoringAddress": monitoring_address}
    return {
        "adapter": "gcp-pubsub",
        "source": "monitoring",
        "subscriptionName": f"projects/{PROJECT}/subscriptions/{subscription}",
        **address,
        **extra,
    }


@pytest.fixture(scope="module")
def scaler() -> Iterator[ScalerProcess]:
    """Default policy; Google isolated, though nothing here gets as far as asking Google for anything."""
    process = ScalerProcess(["--error-cache-ttl", "0"], env=google_isolated_env())
    yield process
    process.stop()


@pytest.fixture
def backlog(scraped: PrometheusServer) -> tuple[str, int]:
    """A subscription whose backlog (7) Prometheus serves under the Cloud Monitoring PromQL name."""
    assert scraped.exporter is not None
    name = f"egress-{uuid.uuid4().hex[:8]}"
    labels = {"project_id": PROJECT, "subscription_id": name}
    scraped.exporter.set(BACKLOG, 7, **labels)
    scraped.wait_for_value(scraped.exporter.series(BACKLOG, **labels), 7)
    return name, 7


@pytest.fixture
def queue_of_4(rabbitmq: RabbitBroker) -> str:
    queue = rabbitmq.declare("egress")
    rabbitmq.publish(queue, 4)
    return queue


@pytest.mark.parametrize(
    ("host", "named"),
    [
        ("amqp://guest:guest@169.254.169.254:5672/", "169.254.169.254"),
        ("amqps://169.254.169.254/orders", "169.254.169.254"),
        ("http://guest:guest@[fe80::1]:15672/", "fe80::1"),
        ("amqp://metadata.google.internal/", "metadata.google.internal"),
        ("amqp://2852039166:5672/", "2852039166"),  # 169.254.169.254 written as one number
    ],
)
def test_link_local_rabbitmq_host_is_permission_denied_naming_host_and_key(
    scaler: ScalerProcess, host: str, named: str
) -> None:
    for call in (lambda: scaler.spec(rabbit(host)), lambda: scaler.metrics(rabbit(host))):
        details = denied(call)
        assert f"host '{named}'" in details and "metadata key 'host'" in details, details
    assert "guest:guest" not in details


@pytest.mark.parametrize(
    ("address", "named"),
    [
        ("http://169.254.169.254/computeMetadata/v1/", "169.254.169.254"),
        ("https://[fe80::a9fe:a9fe]/", "fe80::a9fe:a9fe"),
        ("http://metadata.google.internal/", "metadata.google.internal"),
    ],
)
def test_link_local_pubsub_monitoring_address_is_permission_denied_naming_host_and_key(
    scaler: ScalerProcess, address: str, named: str
) -> None:
    for call in (
        lambda: scaler.spec(pubsub(address)),
        lambda: scaler.metrics(pubsub(address)),
        lambda: scaler.is_active(pubsub(address)),
    ):
        details = denied(call)
        assert f"host '{named}'" in details and "metadata key 'monitoringAddress'" in details, details


def test_allow_list_is_honoured_for_rabbitmq_hosts(
    start_scaler: StartScaler, rabbitmq: RabbitBroker, queue_of_4: str
) -> None:
    # AMQP to the broker's port is allowed; its management API (another port, another scheme) is not.
    scaler = start_scaler(egress_allow=f"amqp://127.0.0.1:{rabbitmq.amqp_port}/")
    assert scaler.value(rabbit(rabbitmq.amqp_host(), queue_of_4)) == 4
    details = denied(lambda: scaler.metrics(rabbit(rabbitmq.http_host(), queue_of_4)))
    assert "host '127.0.0.1'" in details and "'host'" in details and "not in egress_allow" in details
    assert "guest:guest" not in details
    by_cidr = start_scaler(egress_allow="10.0.0.0/8")
    assert "not in egress_allow" in denied(lambda: by_cidr.spec(rabbit(rabbitmq.amqp_host(), queue_of_4)))


def test_allow_list_is_honoured_for_pubsub_monitoring_addresses(
    start_scaler: StartScaler, scraped: PrometheusServer, backlog: tuple[str, int]
) -> None:
    subscription, messages = backlog
    scaler = start_scaler(egress_allow=f"{scraped.url}/", env=google_isolated_env())
    assert scaler.value(pubsub(scraped.url, subscription)) == messages
    other = "http://127.0.0.2:9090"
    details = denied(lambda: scaler.metrics(pubsub(other, subscription)))
    assert "host '127.0.0.2'" in details and "'monitoringAddress'" in details and "not in egress_allow" in details


NAMED = """
connections:
  team-rabbit:
    adapter: rabbitmq
    metadata: {{host: "{amqp}"}}
    namespaces: [team-a]
  team-monitoring:
    adapter: gcp-pubsub
    metadata: {{monitoringAddress: "{monitoring}"}}
    namespaces: [team-a]
"""


def test_only_named_broker_connections_when_inline_addresses_are_forbidden(
    start_scaler: StartScaler,
    rabbitmq: RabbitBroker,
    queue_of_4: str,
    scraped: PrometheusServer,
    backlog: tuple[str, int],
) -> None:
    subscription, messages = backlog
    scaler = start_scaler(
        allow_inline_addresses="false",
        config=NAMED.format(amqp=rabbitmq.amqp_host(), monitoring=scraped.url),
        env=google_isolated_env(),
    )
    inline = [
        (rabbit(rabbitmq.amqp_host(), queue_of_4), "'host'"),
        (pubsub(scraped.url, subscription), "'monitoringAddress'"),
    ]
    for metadata, key in inline:
        for call in (lambda m=metadata: scaler.spec(m), lambda m=metadata: scaler.metrics(m)):
            details = denied(call)
            assert key in details and "named connection" in details, details
    named_rabbit = {**rabbit("", queue_of_4), "connection": "team-rabbit"}
    del named_rabbit["host"]
    named_pubsub = {**pubsub(None, subscription), "connection": "team-monitoring"}
    assert scaler.value(named_rabbit, namespace="team-a") == 4
    assert scaler.value(named_pubsub, namespace="team-a") == messages
    assert "namespace 'team-b'" in denied(lambda: scaler.metrics(named_rabbit, namespace="team-b"))


# --- inline Google credentials name addresses too -----------------------------------------------


def test_token_endpoint_of_inline_credentials_is_checked_by_the_egress_policy(
    start_scaler: StartScaler, token_endpoint: TokenEndpoint
) -> None:
    link_local, _ = service_account_key("key-egress-1", "http://169.254.169.254/token")
    scaler = start_scaler(env=google_isolated_env())
    details = denied(lambda: scaler.spec(pubsub(None, credentials=link_local)))
    assert "host '169.254.169.254'" in details and "metadata key 'credentials'" in details
    assert "key-egress-1" not in details and "PRIVATE KEY" not in details

    loopback, _ = service_account_key("key-egress-2", token_endpoint.url)
    outside = start_scaler(egress_allow="10.0.0.0/8", env=google_isolated_env())
    details = denied(lambda: outside.metrics(pubsub(None, credentials=loopback)))
    assert "host '127.0.0.1'" in details and "'credentials'" in details and "not in egress_allow" in details
    assert token_endpoint.bodies == [], "refused before google-auth asked for a token"
    allowed = start_scaler(egress_allow="127.0.0.1/32", env=google_isolated_env())
    error = error_of(lambda: allowed.metrics(pubsub(None, credentials=loopback)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error.details()
    assert len(token_endpoint.bodies) == 1, "allowed: the token endpoint is asked (and refuses)"


def test_inline_credentials_other_than_a_service_account_key_are_refused_unread(
    scaler: ScalerProcess, token_endpoint: TokenEndpoint, tmp_path: Path
) -> None:
    # An external_account document makes google-auth read a file and send it to the document's token_url:
    # a ScaledObject could have the scaler post its own pod's files (its service account token) anywhere.
    pod_file = tmp_path / "token"
    pod_file.write_text("pod-file-content-Zz90")
    external = {
        "type": "external_account",
        "audience": "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/x",
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        "token_url": token_endpoint.url,
        "credential_source": {"file": str(pod_file)},
    }
    for call in (scaler.spec, scaler.metrics, scaler.is_active):
        error = error_of(lambda call=call: call(pubsub(None, credentials=json.dumps(external))))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert "'credentials'" in error.details() and "service_account" in error.details()
        assert "pod-file-content" not in error.details() and str(pod_file) not in error.details()
    assert token_endpoint.bodies == []


def test_google_credentials_never_go_over_plain_http(scaler: ScalerProcess) -> None:
    for address in (
        "http://monitoring.googleapis.com/v1/projects/p/location/global/prometheus",
        "http://x.googleapis.com.",
    ):
        error = error_of(lambda address=address: scaler.spec(pubsub(address)))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert "monitoringAddress" in str(error.details()) and "https://" in str(error.details())
    # GetMetricSpec never connects: https to Google is accepted, and so is http to a host that gets no token.
    assert scaler.spec(pubsub("https://monitoring.googleapis.com/v1/projects/p/location/global/prometheus")).metricSpecs
    assert scaler.spec(pubsub("http://127.0.0.1:9/")).metricSpecs
