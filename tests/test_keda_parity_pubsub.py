"""KEDA's gcp-pubsub parse tests, row for row, through a real scaler's GetMetricSpec.

Rows: kedacore/keda pkg/scalers/gcp_pubsub_scaler_test.go `testPubSubMetadata` and
`gcpPubSubMetricIdentifiers` at commit 8b4f083ca8c8c2baf8477e322bd4d16ac4dfa09a. KEDA's placeholder
credentials "{}" are a real service account key here (this scaler checks the key's type).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.fixtures.keda_parity import Row, as_sent, ask, check
from tests.fixtures.pubsub import google_isolated_env, service_account_key
from tests.fixtures.scaler import ScalerProcess

KEY = json.loads(service_account_key("k1", "https://oauth2.googleapis.com/token")[0])
KEY["project_id"] = "myproject"
RESOLVED_ENV = {
    "SAMPLE_CREDS": json.dumps(KEY),
    "MY_ENV_SUBSCRIPTION": "myEnvSubscription",
    "MY_ENV_TOPIC": "myEnvTopic",
}
C = {"credentialsFromEnv": "SAMPLE_CREDS"}

ROWS = [
    Row("empty", {}, {}, False),
    Row(
        "all properly formed with value",
        {"subscriptionName": "mysubscription", "value": "7", **C},
        None,
        True,
        "gcp-ps-mysubscription",
        7,
    ),
    Row(
        "all properly formed with subscriptionName",
        {"subscriptionName": "mysubscription", "value": "7", **C, "activationValue": "5"},
        None,
        True,
    ),
    Row(
        "all properly formed with oldest unacked message age mode",
        {"subscriptionName": "mysubscription", "mode": "OldestUnackedMessageAge", "value": "7", **C},
        None,
        True,
    ),
    Row("missing subscriptionName", {"subscriptionName": "", "value": "7", **C}, None, False),
    Row(
        "missing credentials",
        {"subscriptionName": "mysubscription", "value": "7", "credentialsFromEnv": ""},
        None,
        False,
    ),
    Row("malformed value", {"subscriptionName": "mysubscription", "value": "AA", **C}, None, False),
    Row("malformed mode", {"subscriptionName": "", "mode": "AA", "value": "7", **C}, None, False),
    Row(
        "malformed activationTargetValue",
        {"subscriptionName": "mysubscription", "value": "7", **C, "activationValue": "AA"},
        None,
        False,
    ),
    # TriggerAuthentication's GoogleApplicationCredentials is not forwarded: it arrives as `credentials`.
    Row(
        "Credentials from AuthParams",
        {"subscriptionName": "mysubscription", "value": "7"},
        {"credentials": "Creds"},
        True,
    ),
    Row(
        "Credentials from AuthParams with empty creds",
        {"subscriptionName": "mysubscription", "value": "7"},
        {"credentials": ""},
        False,
    ),
    Row(
        "with full link to subscription",
        {"subscriptionName": "projects/myproject/subscriptions/mysubscription", "value": "7", **C},
        None,
        True,
        "gcp-ps-projects-myproject-subscriptions-mysubscription",
    ),
    Row(
        "with full (bad) link to subscription",
        {"subscriptionName": "projects/myproject/mysubscription", "value": "7", **C},
        None,
        True,
    ),
    Row(
        "properly formed float value and activationTargetValue",
        {"subscriptionName": "mysubscription", "value": "7.1", **C, "activationValue": "2.1"},
        None,
        True,
        target=7.1,
    ),
    Row("All optional omitted", {"subscriptionName": "mysubscription", **C}, None, True, target=10),
    Row(
        "value omitted when mode present",
        {"subscriptionName": "mysubscription", "mode": "SubscriptionSize", **C},
        None,
        True,
        target=10,
    ),
    Row(
        "all properly formed with topicName",
        {"topicName": "mytopic", "mode": "MessageSizes", "value": "7", **C},
        None,
        True,
        "gcp-ps-mytopic",
    ),
    Row(
        "with full link to topic",
        {"topicName": "projects/myproject/topics/mytopic", "mode": "MessageSizes", **C},
        None,
        True,
    ),
    Row(
        "with full (bad) link to topic",
        {"topicName": "projects/myproject/mytopic", "mode": "MessageSizes", **C},
        None,
        True,
    ),
    Row(
        "both subscriptionName and topicName present",
        {"subscriptionName": "mysubscription", "topicName": "mytopic", "value": "7", **C},
        None,
        False,
    ),
    Row("both subscriptionName and topicName missing", {"value": "7", **C}, None, False),
    Row(
        "deprecated subscriptionSize errors",
        {"subscriptionName": "mysubscription", "subscriptionSize": "7", **C},
        None,
        False,
    ),
    Row(
        "both subscriptionName and subscriptionNameFromEnv present",
        {"subscriptionName": "mysubscription", "subscriptionNameFromEnv": "MY_ENV_SUBSCRIPTION", "value": "7", **C},
        None,
        True,
        "gcp-ps-mysubscription",
    ),
    Row(
        "both topicName and topicNameFromEnv present",
        {"topicName": "mytopic", "topicNameFromEnv": "MY_ENV_TOPIC", "value": "7", **C},
        None,
        True,
        "gcp-ps-mytopic",
    ),
    Row(
        "subscriptionNameFromEnv present",
        {"subscriptionNameFromEnv": "MY_ENV_SUBSCRIPTION", "value": "7", **C},
        None,
        True,
        "gcp-ps-myEnvSubscription",
    ),
    Row(
        "topicNameFromEnv present",
        {"topicNameFromEnv": "MY_ENV_TOPIC", "value": "7", **C},
        None,
        True,
        "gcp-ps-myEnvTopic",
    ),
]

# Deliberate differences (README "How it behaves with KEDA"), each with its reason.
DIFFERENCES = {
    "missing credentials": "no credentials means the scaler's own identity (ADC), KEDA's pod identity `gcp`: "
    "KEDA does not forward podIdentity to an external scaler",
    "Credentials from AuthParams with empty creds": "as above: empty credentials are absent, so ADC",
    "with full (bad) link to subscription": "a malformed resource path is refused at GetMetricSpec; KEDA "
    "accepts it and fails on every read",
    "with full (bad) link to topic": "as above",
}


@pytest.fixture(scope="module")
def scaler() -> Iterator[ScalerProcess]:
    process = ScalerProcess([], env=google_isolated_env())
    yield process
    process.stop()


def test_every_keda_row_gets_kedas_answer_or_a_listed_difference(scaler: ScalerProcess) -> None:
    agreed = [check(row, ask(scaler, as_sent(row, RESOLVED_ENV, "gcp-pubsub")), DIFFERENCES) for row in ROWS]
    assert sum(agreed) == len(ROWS) - len(DIFFERENCES) == 22


@pytest.mark.parametrize("mode", ["OldestUnackedMessageAge", "BacklogBytes", "NumOutstandingMessages", "MessageSizes"])
def test_any_cloud_monitoring_metric_is_a_mode(scaler: ScalerProcess, mode: str) -> None:
    sent = {"adapter": "gcp-pubsub", "subscriptionName": "mysubscription", "mode": mode, "credentials": C_SENT}
    assert ask(scaler, sent).accepted


C_SENT = RESOLVED_ENV["SAMPLE_CREDS"]


@pytest.mark.parametrize(
    ("extra", "accepted"),
    [
        ({"aggregation": "percentile0"}, True),
        ({"aggregation": "percentile100"}, True),
        ({"aggregation": "percentile101"}, False),
        ({"aggregation": "variance"}, True),
        ({"aggregation": "p99"}, False),
        ({"timeHorizon": "1m30s"}, True),
        ({"timeHorizon": "90000"}, True),  # milliseconds, as in KEDA
        ({"timeHorizon": "-1s"}, False),
        ({"timeHorizon": "soon"}, False),
        ({"timeHorizon": "  "}, True),  # blank is absent
        ({"activationValue": "-1"}, True),  # negative activation thresholds are accepted, as in KEDA
        ({"value": "+5"}, False),  # KEDA reads numbers as JSON does
        ({"value": "1e1"}, True),
    ],
)
def test_typed_config_rules(scaler: ScalerProcess, extra: dict[str, str], accepted: bool) -> None:
    sent = {"adapter": "gcp-pubsub", "subscriptionName": "mysubscription", "credentials": C_SENT, **extra}
    outcome = ask(scaler, sent)
    assert outcome.accepted == accepted, outcome.details
    if not accepted:
        assert f"'{next(iter(extra))}'" in outcome.details


@pytest.mark.parametrize(
    ("queue", "expected"),
    [
        ("Orders.EU%v1", "gcp-ps-Orders-EU-v1"),
        ("projects/p-1/subscriptions/a%2Bb", "gcp-ps-projects-p-1-subscriptions-a-2Bb"),
    ],
)
def test_metric_name_is_kedas(scaler: ScalerProcess, queue: str, expected: str) -> None:
    sent = {"adapter": "gcp-pubsub", "subscriptionName": queue, "credentials": C_SENT}
    assert ask(scaler, sent).metric == expected
