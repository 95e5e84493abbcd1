"""`source: monitoring`: the backlog from Cloud Monitoring's Prometheus-compatible API, by PromQL.

Cloud Monitoring names map to PromQL by replacing the first `/` with `:` and every other `.` or `/`
with `_`. These metrics are gauges: we read the latest sample (or the `aggregation` over `timeHorizon`),
never a DELTA of them (kedacore/keda#6052).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .api import HttpClients, HttpEndpoint, SourceNotFound
from .gcp_pubsub_metadata import PubSubMetadata
from .prometheus import instant_query, sample_values

_METRICS = {
    # (is_topic, mode) -> Cloud Monitoring metric type
    (False, "NumUndeliveredMessages"): "pubsub.googleapis.com/subscription/num_undelivered_messages",
    (False, "OldestUnackedMessageAge"): "pubsub.googleapis.com/subscription/oldest_unacked_message_age",
    (True, "NumUndeliveredMessages"): "pubsub.googleapis.com/topic/num_unacked_messages_by_region",
    (True, "OldestUnackedMessageAge"): "pubsub.googleapis.com/topic/oldest_unacked_message_age_by_region",
}
_OVER_TIME = {
    "": "last_over_time",
    "max": "max_over_time",
    "min": "min_over_time",
    "avg": "avg_over_time",
    "mean": "avg_over_time",
    "sum": "sum_over_time",
    "count": "count_over_time",
    "stddev": "stddev_over_time",
    "variance": "stdvar_over_time",
}


def promql_name(metric_type: str) -> str:
    """`pubsub.googleapis.com/subscription/num_undelivered_messages` -> `pubsub_googleapis_com:subscription_...`."""
    domain, _, rest = metric_type.partition("/")
    return domain.replace(".", "_").replace("/", "_") + ":" + rest.replace(".", "_").replace("/", "_")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _duration(seconds: float) -> str:
    # PromQL wants integer durations with a unit.
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{round(seconds * 1000)}ms"


def build_promql(metadata: PubSubMetadata) -> str:
    """The query sent: one series (or none) holding the reading, gauge-correct."""
    metric = promql_name(_METRICS[(metadata.is_topic, metadata.mode)])
    label = "topic_id" if metadata.is_topic else "subscription_id"
    selector = f'{metric}{{project_id="{_label(metadata.project)}",{label}="{_label(metadata.short_name)}"}}'
    window = f"{selector}[{_duration(metadata.time_horizon_seconds)}]"
    aggregation = metadata.aggregation
    if aggregation == "median":
        query = f"quantile_over_time(0.5, {window})"
    elif aggregation.startswith("percentile"):
        query = f"quantile_over_time(0.{aggregation.removeprefix('percentile')}, {window})"
    else:
        query = f"{_OVER_TIME[aggregation]}({window})"
    if metadata.is_topic:
        # Topic metrics come per region: the backlog is their sum, the age their maximum.
        query = f"{'sum' if metadata.mode == 'NumUndeliveredMessages' else 'max'}({query})"
    return query


@dataclass
class _LastGood:
    value: float
    monotonic: float
    keep_until: float


class MonitoringReader:
    """Runs the PromQL through the Prometheus adapter's client; remembers the last good reading per source."""

    def __init__(self, http: HttpClients) -> None:
        self.http = http
        # By endpoint, identity and query, not by full source key: triggers that differ only in
        # `staleness` or `valueIfNull` read the same series and share its last good reading.
        self._last_good: dict[tuple[str, str, str], _LastGood] = {}

    async def read(
        self,
        metadata: PubSubMetadata,
        identity: str,
        timeout: float,
        token: Callable[[], Awaitable[str]] | None,
    ) -> float:
        url = metadata.monitoring_url
        headers = {"Authorization": f"Bearer {await token()}"} if token is not None else {}
        source = f"Cloud Monitoring PromQL API at {url}" if token is not None else f"PromQL API at {url}"
        query = build_promql(metadata)
        data = await instant_query(
            self.http,
            url,
            [("query", query)],
            headers=headers,
            auth=None,
            endpoint=HttpEndpoint.for_url(url),
            timeout=timeout,
            source=source,
        )
        values = sample_values(data)
        now = time.monotonic()
        key = (url, identity, query)
        if values:
            value = max(values)
            self._last_good[key] = _LastGood(value, now, now + metadata.staleness_seconds)
            return value
        return self._absent(metadata, key, query, now)

    def _absent(self, metadata: PubSubMetadata, key: tuple[str, str, str], query: str, now: float) -> float:
        if metadata.value_if_null is not None:
            return metadata.value_if_null
        last = self._last_good.get(key)
        if last is not None and now - last.monotonic <= metadata.staleness_seconds:
            return last.value
        raise SourceNotFound(
            f"the Cloud Monitoring series for {metadata.path} is absent (query: {query}); it appears a few "
            "minutes after the first message, and is missing for idle objects: set `valueIfNull` to read it "
            "as a number"
        )

    def prune(self) -> int:
        """Drop readings past their staleness, so deleted ScaledObjects leave nothing behind."""
        now = time.monotonic()
        expired = [key for key, last in self._last_good.items() if last.keep_until < now]
        for key in expired:
            del self._last_good[key]
        return len(expired)
