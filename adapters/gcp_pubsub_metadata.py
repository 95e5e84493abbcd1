"""Trigger metadata of `adapter: gcp-pubsub`, with the names of KEDA's gcp-pubsub scaler where they exist."""

from __future__ import annotations

import json
import os
import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from .api import Duration, TriggerMetadata

Source = Literal["monitoring", "peek"]

EMULATOR_ENV = "PUBSUB_EMULATOR_HOST"
GOOGLE_MONITORING = "https://monitoring.googleapis.com/v1/projects/{project}/location/global/prometheus"
UNRESOLVED_PROJECT = "-"
"""The project of a short name whose project comes from loaded credentials or the ambient project."""

_PATH = re.compile(r"projects/(?P<project>[^/]+)/(?P<kind>subscriptions|topics)/(?P<name>[^/]+)")
# Pub/Sub resource names: 3-255 characters, starting with a letter (the emulator enforces the length too).
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}")
# Project ids: lower-case, digits, hyphens; legacy domain-scoped ids carry `example.com:`.
_PROJECT = re.compile(r"[a-z][a-z0-9\-.:]{1,98}[a-z0-9]")
_MODE = re.compile(r"[A-Z][A-Za-z0-9]{0,99}")
# KEDA's aggregations (pkg/scalers/gcp/gcp_stackdriver_client.go buildAggregation); max, min, avg are extras.
KEDA_AGGREGATIONS = ("mean", "median", "variance", "stddev", "sum", "count", "percentileNN")
_EXTRA_AGGREGATIONS = ("max", "min", "avg")
_PERCENTILE = re.compile(r"percentile\+?(\d{1,3})")
# Cloud Monitoring's Pub/Sub metrics whose points are distributions (histograms in PromQL).
DISTRIBUTIONS = frozenset({"message_sizes", "ack_latencies", "push_request_latencies"})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")


def snake_case(camel: str) -> str:
    """KEDA's snakeCase: `OldestUnackedMessageAge` -> `oldest_unacked_message_age`."""
    snake = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", camel)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", snake).lower()


def percentile(aggregation: str) -> int | None:
    """NN of `percentileNN` (0-100), None for other aggregations."""
    match = _PERCENTILE.fullmatch(aggregation)
    return int(match[1]) if match and int(match[1]) <= 100 else None


class PubSubMetadata(TriggerMetadata):
    """Trigger metadata for `adapter: gcp-pubsub` (names as in KEDA's gcp-pubsub scaler)."""

    address_keys = ("monitoringAddress",)
    # Not `monitoringAddress` or credentials. The peek keys are allowed: a peek reads the named subscription
    # with the connection's identity like Monitoring does, and that identity's IAM roles decide whether it may.
    object_keys = (
        "subscriptionName",
        "topicName",
        "projectId",
        "mode",
        "aggregation",
        "timeHorizon",
        "valueIfNull",
        "source",
        "activationSource",
        "peekLimit",
        "staleness",
    )
    path_keys = ("credentialsFile",)
    env_path_keys = ("credentialsFromEnvFile",)

    subscription_name: str = Field(
        "",
        description="Subscription: short name (project from `projectId`, the credentials or the ambient project) "
        "or `projects/<p>/subscriptions/<s>`",
    )
    topic_name: str = Field("", description="Topic instead of a subscription: short name or `projects/<p>/topics/<t>`")
    project_id: str = Field(
        "",
        description="Project of a short name; default: the credentials' `project_id`, else the scaler's "
        "ambient project (GOOGLE_CLOUD_PROJECT, google-auth's default)",
    )
    mode: str = Field(
        "SubscriptionSize",
        validate_default=True,  # SubscriptionSize is read as NumUndeliveredMessages
        description="A Cloud Monitoring Pub/Sub metric in CamelCase, snake_cased onto the subscription or "
        "topic metric (e.g. OldestUnackedMessageAge, MessageSizes); SubscriptionSize = NumUndeliveredMessages",
    )
    value: float = Field(10.0, description="Target value per replica (HPA target); must be > 0")
    activation_value: float = Field(0.0, description="Active when the reading is strictly greater than this")
    subscription_size: str = Field("", description="Removed in KEDA v2.20: an error; use `mode` and `value`")
    source: Source | None = Field(
        None,
        description="monitoring (Cloud Monitoring's PromQL API) or peek (pull without ack, release at once); "
        f"default: peek when {EMULATOR_ENV} is set in the scaler's environment, else monitoring",
    )
    activation_source: Literal["peek"] | None = Field(
        None, description="peek: IsActive/StreamIsActive read a cheap peek while GetMetrics reads `source`"
    )
    aggregation: str = Field(
        "",
        description="monitoring: reduce the aligned series with mean, median, variance, stddev, sum, count or "
        "percentileNN (0-100), as KEDA; extras: max, min, avg; default: the latest sample",
    )
    time_horizon: Duration = Field(
        0.0, description="monitoring: how far back to look; 0 or unset: 2m, or 5m with an `aggregation`"
    )
    value_if_null: float | None = Field(None, description="monitoring: the reading when the series is absent")
    staleness: Duration = Field(
        0.0,
        description="monitoring: how long the last good reading stands in for an absent series "
        "(default 0: an absent series is an error, as in KEDA)",
    )
    monitoring_address: str = Field(
        "",
        description="monitoring: Prometheus-API base URL overriding Cloud Monitoring's "
        "(a proxy, a test server); Google credentials are sent to `*.googleapis.com` only",
    )
    peek_limit: int = Field(1000, gt=0, le=100_000, description="peek: at most this many messages are pulled")
    credentials: SecretStr = Field(
        SecretStr(""),
        description="Service account key JSON (KEDA's `credentialsFromEnv` arrives here; `type: service_account` "
        "only, its `token_uri` is checked by the egress policy); default: ADC",
    )
    credentials_file: str = Field("", description="Path of a credentials JSON file in the scaler pod; default: ADC")
    credentials_from_env_file: str = Field(
        "",
        description="Name of an environment variable of the scaler pod holding a credentials file path "
        "(KEDA's key; KEDA does not resolve it for external scalers)",
    )

    @field_validator("credentials")
    @classmethod
    def _check_credentials(cls, value: SecretStr) -> SecretStr:
        document = _credentials_document(value.get_secret_value())
        # Other types (external_account, impersonated_service_account, ...) make google-auth read files and
        # call URLs the document names: whoever writes the ScaledObject could have the scaler send a file
        # of its pod (its service account token, say) to a server of their choosing.
        if document is not None and document.get("type") != "service_account":
            raise ValueError(
                'must be a service account key ("type": "service_account"); use credentialsFile for others'
            )
        if document is not None and not isinstance(document.get("token_uri", ""), str):
            raise ValueError("has a token_uri that is not a URL")
        return value

    @field_validator("mode")
    @classmethod
    def _check_mode(cls, value: str) -> str:
        if value == "SubscriptionSize":  # KEDA: SubscriptionSize is NumUndeliveredMessages
            return "NumUndeliveredMessages"
        if not _MODE.fullmatch(value):
            raise ValueError(
                f"expected a Cloud Monitoring Pub/Sub metric in CamelCase (e.g. NumUndeliveredMessages, "
                f"OldestUnackedMessageAge, MessageSizes), got {value[:40]!r}"
            )
        return value

    @field_validator("aggregation")
    @classmethod
    def _check_aggregation(cls, value: str) -> str:
        if value and value not in (*KEDA_AGGREGATIONS, *_EXTRA_AGGREGATIONS) and percentile(value) is None:
            accepted = ", ".join((*KEDA_AGGREGATIONS[:-1], "percentile0 to percentile100", *_EXTRA_AGGREGATIONS))
            raise ValueError(f"unknown aggregation {value[:40]!r}; accepted: {accepted}")
        return value

    @field_validator("subscription_size")
    @classmethod
    def _removed(cls, value: str) -> str:
        raise ValueError("was removed in KEDA v2.20; use `mode` and `value`")

    @field_validator("credentials_from_env_file")
    @classmethod
    def _check_env_name(cls, value: str) -> str:
        if not _ENV_NAME.fullmatch(value):
            raise ValueError("must be the name of an environment variable")
        return value

    @field_validator("monitoring_address")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials (user:password@)")
        if is_google_endpoint(value) and parts.scheme != "https":
            # A Google host gets the Google bearer token (the scaler's own identity, with ADC): never in clear.
            raise ValueError("must be an https:// URL when it names a Google host (*.googleapis.com)")
        return value

    @model_validator(mode="after")
    def _check_object(self) -> PubSubMetadata:
        if bool(self.subscription_name) == bool(self.topic_name):
            raise ValueError("subscriptionName: give exactly one of `subscriptionName` and `topicName`")
        key = "subscriptionName" if self.subscription_name else "topicName"
        text = self.subscription_name or self.topic_name
        kind = "subscriptions" if self.subscription_name else "topics"
        match = _PATH.fullmatch(text)
        if match:
            if match["kind"] != kind:
                raise ValueError(f"{key}: expected projects/<project>/{kind}/<name>, got a path to {match['kind']}")
            project, name = match["project"], match["name"]
        elif "/" in text:
            raise ValueError(f"{key}: expected a short name or projects/<project>/{kind}/<name>")
        else:
            project, name = self.project_id or _credentials_project(self.credentials) or UNRESOLVED_PROJECT, text
        if project != UNRESOLVED_PROJECT and not _PROJECT.fullmatch(project):
            raise ValueError(f"{key}: '{project[:60]}' is not a valid project id")
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"{key}: '{name[:60]}' is not a valid name (3-255 characters: letters, digits, - _ . ~ + %, "
                "starting with a letter)"
            )
        given = [k for k, v in self._credential_keys() if v]
        if len(given) > 1:
            raise ValueError(f"{given[0]}: give only one of `credentials` (credentialsFromEnv), {_NOT_BOTH}")
        if self.aggregation in ("variance", "stddev", "max", "min") and self.is_distribution:
            raise ValueError(
                f"aggregation: {self.aggregation} of a distribution metric ({self.mode}) cannot be computed "
                "from its PromQL histogram; use mean, median, sum, count or percentileNN"
            )
        return self

    def _credential_keys(self) -> list[tuple[str, str]]:
        return [
            ("credentials", self.credentials.get_secret_value()),
            ("credentialsFile", self.credentials_file),
            ("credentialsFromEnvFile", self.credentials_from_env_file),
        ]

    def embedded_addresses(self) -> list[tuple[str, str]]:
        # google-auth posts the signed assertion to the key's token_uri: a ScaledObject chooses that address.
        token_uri = inline_token_uri(self.credentials.get_secret_value())
        return [("credentials", token_uri)] if token_uri else []

    @property
    def is_topic(self) -> bool:
        return bool(self.topic_name)

    @property
    def project(self) -> str:
        """The project named by the metadata (path, projectId, inline credentials), or UNRESOLVED_PROJECT."""
        match = _PATH.fullmatch(self.resource)
        if match:
            return match["project"]
        return self.project_id or _credentials_project(self.credentials) or UNRESOLVED_PROJECT

    @property
    def resource(self) -> str:
        """The subscription or topic as given (KEDA names the metric after it)."""
        return self.subscription_name or self.topic_name

    @property
    def short_name(self) -> str:
        return self.resource.rsplit("/", 1)[-1]

    def path_in(self, project: str) -> str:
        """The full resource name, `projects/<p>/subscriptions/<s>` or `projects/<p>/topics/<t>`."""
        kind = "topics" if self.is_topic else "subscriptions"
        return f"projects/{project}/{kind}/{self.short_name}"

    @property
    def path(self) -> str:
        return self.path_in(self.project)

    @property
    def metric_type(self) -> str:
        """The Cloud Monitoring metric read: `pubsub.googleapis.com/<subscription|topic>/<snake_case(mode)>`."""
        kind = "topic" if self.is_topic else "subscription"
        metric = snake_case(self.mode)
        if self.is_topic and metric in ("num_undelivered_messages", "oldest_unacked_message_age"):
            # These exist per subscription only; a topic's backlog is published per region.
            metric = metric.replace("num_undelivered", "num_unacked") + "_by_region"
        return f"pubsub.googleapis.com/{kind}/{metric}"

    @property
    def is_distribution(self) -> bool:
        return self.metric_type.rsplit("/", 1)[-1] in DISTRIBUTIONS

    @property
    def effective_source(self) -> Source:
        if self.source is not None:
            return self.source
        return "peek" if os.environ.get(EMULATOR_ENV) else "monitoring"

    def monitoring_url_in(self, project: str) -> str:
        return (self.monitoring_address or GOOGLE_MONITORING.format(project=project)).rstrip("/")

    @property
    def monitoring_url(self) -> str:
        return self.monitoring_url_in(self.project)

    @property
    def time_horizon_seconds(self) -> float:
        # KEDA: a horizon of 0 or less means the default, 2m, or 5m when aggregating.
        if self.time_horizon > 0:
            return self.time_horizon
        return 300.0 if self.aggregation else 120.0

    @property
    def staleness_seconds(self) -> float:
        return self.staleness


_NOT_BOTH = "`credentialsFile` and `credentialsFromEnvFile`"


def _credentials_project(credentials: SecretStr) -> str:
    document = _credentials_document(credentials.get_secret_value())
    project = document.get("project_id") if document is not None else None
    return project if isinstance(project, str) else ""


def is_google_endpoint(url: str) -> bool:
    """Google credentials go to Google only: never to a proxy or test server given in monitoringAddress."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    return host == "googleapis.com" or host.endswith(".googleapis.com")


def inline_token_uri(text: str) -> str:
    """The token_uri of inline credentials JSON ("" when there is none): checked here, pinned at refresh."""
    document = _credentials_document(text)
    token_uri = document.get("token_uri") if document is not None else None
    return token_uri if isinstance(token_uri, str) else ""


def _credentials_document(text: str) -> dict[str, Any] | None:
    """The inline credentials as a JSON object; None when empty or not one (loading reports that, unechoed)."""
    if not text:
        return None
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):  # deep nesting ("[[[[...") overflows the parser's stack
        return None
    return document if isinstance(document, dict) else None
