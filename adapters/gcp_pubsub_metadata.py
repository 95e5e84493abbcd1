"""Trigger metadata of `adapter: gcp-pubsub`, with the names of KEDA's gcp-pubsub scaler where they exist."""

from __future__ import annotations

import json
import os
import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from .api import TriggerMetadata, parse_duration

Mode = Literal["NumUndeliveredMessages", "OldestUnackedMessageAge"]
Source = Literal["monitoring", "peek"]

EMULATOR_ENV = "PUBSUB_EMULATOR_HOST"
GOOGLE_MONITORING = "https://monitoring.googleapis.com/v1/projects/{project}/location/global/prometheus"

_PATH = re.compile(r"projects/(?P<project>[^/]+)/(?P<kind>subscriptions|topics)/(?P<name>[^/]+)")
# Pub/Sub resource names: 3-255 characters, starting with a letter (the emulator enforces the length too).
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}")
# Project ids: lower-case, digits, hyphens; legacy domain-scoped ids carry `example.com:`.
_PROJECT = re.compile(r"[a-z][a-z0-9\-.:]{1,98}[a-z0-9]")
_AGGREGATIONS = ("max", "min", "avg", "mean", "sum", "count", "median", "stddev", "variance", "percentileNN")


class PubSubMetadata(TriggerMetadata):
    """Trigger metadata for `adapter: gcp-pubsub` (names as in KEDA's gcp-pubsub scaler)."""

    address_keys = ("monitoringAddress",)

    subscription_name: str = Field(
        "", description="Subscription: short name (with `projectId`) or `projects/<p>/subscriptions/<s>`"
    )
    topic_name: str = Field(
        "",
        description="Topic instead of a subscription: short name (with `projectId`) or `projects/<p>/topics/<t>`",
    )
    project_id: str = Field("", description="Project of a short `subscriptionName` / `topicName`")
    mode: str = Field(
        "NumUndeliveredMessages",
        description="NumUndeliveredMessages (alias SubscriptionSize): backlog; "
        "OldestUnackedMessageAge: age of the oldest unacked message in seconds",
    )
    value: float = Field(10.0, description="Target value per replica (HPA target); must be > 0")
    activation_value: float = Field(0.0, description="Active when the reading is strictly greater than this")
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
        description="monitoring: aggregate over `timeHorizon` (max, min, avg/mean, sum, count, median, stddev, "
        "variance, percentileNN); default: the latest sample",
    )
    time_horizon: str = Field("2m", description="monitoring: window for `aggregation` and for the latest sample")
    value_if_null: float | None = Field(None, description="monitoring: the reading when the series is absent")
    staleness: str = Field(
        "5m", description="monitoring: how long the last good reading stands in for an absent series (0: never)"
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
        if value == "SubscriptionSize":
            return "NumUndeliveredMessages"
        if value not in ("NumUndeliveredMessages", "OldestUnackedMessageAge"):
            raise ValueError(
                f"unknown mode {value[:40]!r}; accepted: NumUndeliveredMessages (alias SubscriptionSize), "
                "OldestUnackedMessageAge"
            )
        return value

    @field_validator("aggregation")
    @classmethod
    def _check_aggregation(cls, value: str) -> str:
        if value and value not in _AGGREGATIONS and not re.fullmatch(r"percentile\d\d", value):
            raise ValueError(f"unknown aggregation {value[:40]!r}; accepted: {', '.join(_AGGREGATIONS)}")
        return value

    @field_validator("time_horizon", "staleness")
    @classmethod
    def _check_duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("time_horizon")
    @classmethod
    def _check_window(cls, value: str) -> str:
        if parse_duration(value) < 1:
            raise ValueError("must be at least 1s (it is a PromQL range)")
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
            if not self.project_id:
                raise ValueError(f"projectId: is required with a short `{key}` (or give the full path)")
            project, name = self.project_id, text
        if not _PROJECT.fullmatch(project):
            raise ValueError(f"{key}: '{project[:60]}' is not a valid project id")
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"{key}: '{name[:60]}' is not a valid name (3-255 characters: letters, digits, - _ . ~ + %, "
                "starting with a letter)"
            )
        if self.credentials.get_secret_value() and self.credentials_file:
            raise ValueError("credentials: give `credentials` (credentialsFromEnv) or `credentialsFile`, not both")
        return self

    def embedded_addresses(self) -> list[tuple[str, str]]:
        # google-auth posts the signed assertion to the key's token_uri: a ScaledObject chooses that address.
        token_uri = inline_token_uri(self.credentials.get_secret_value())
        return [("credentials", token_uri)] if token_uri else []

    @property
    def is_topic(self) -> bool:
        return bool(self.topic_name)

    @property
    def project(self) -> str:
        match = _PATH.fullmatch(self.subscription_name or self.topic_name)
        return match["project"] if match else self.project_id

    @property
    def short_name(self) -> str:
        text = self.subscription_name or self.topic_name
        return text.rsplit("/", 1)[-1]

    @property
    def path(self) -> str:
        """The full resource name, `projects/<p>/subscriptions/<s>` or `projects/<p>/topics/<t>`."""
        kind = "topics" if self.is_topic else "subscriptions"
        return f"projects/{self.project}/{kind}/{self.short_name}"

    @property
    def effective_source(self) -> Source:
        if self.source is not None:
            return self.source
        return "peek" if os.environ.get(EMULATOR_ENV) else "monitoring"

    @property
    def monitoring_url(self) -> str:
        return (self.monitoring_address or GOOGLE_MONITORING.format(project=self.project)).rstrip("/")

    @property
    def time_horizon_seconds(self) -> float:
        return parse_duration(self.time_horizon)

    @property
    def staleness_seconds(self) -> float:
        return parse_duration(self.staleness)


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
