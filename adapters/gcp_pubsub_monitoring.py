"""`source: monitoring`: the backlog from Cloud Monitoring's Prometheus-compatible API, by PromQL.

Cloud Monitoring names map to PromQL by replacing the first `/` with `:` and every other `.` or `/`
with `_`. These metrics are gauges: we read the latest sample (or the `aggregation` over `timeHorizon`),
never a DELTA of them (kedacore/keda#6052).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .api import HttpClients, HttpEndpoint, InvalidMetadata, SourceNotFound
from .gcp_pubsub_metadata import PubSubMetadata, percentile
from .prometheus import instant_query, sample_values

# KEDA's aggregations reduce the aligned series (MQL `group_by [], <reducer>(value)`); as PromQL
# aggregation operators over each series' latest sample in the horizon. max, min and avg are extras.
_REDUCERS = {
    "mean": "avg",
    "avg": "avg",
    "sum": "sum",
    "count": "count",
    "stddev": "stddev",
    "variance": "stdvar",
    "max": "max",
    "min": "min",
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


def build_promql(metadata: PubSubMetadata, project: str) -> str:
    """The query sent: one series (or none) holding the reading, gauge-correct."""
    metric = promql_name(metadata.metric_type)
    label = "topic_id" if metadata.is_topic else "subscription_id"
    matchers = f'{{project_id="{_label(project)}",{label}="{_label(metadata.short_name)}"}}'
    window = f"[{_duration(metadata.time_horizon_seconds)}]"
    if metadata.is_distribution:
        return _distribution_promql(metadata, metric, matchers, window)
    aligned = f"last_over_time({metric}{matchers}{window})"
    aggregation = metadata.aggregation
    nn = percentile(aggregation) if aggregation != "median" else 50
    if nn is not None:
        return f"quantile({nn / 100:g}, {aligned})"
    if aggregation:
        return f"{_REDUCERS[aggregation]}({aligned})"
    if metadata.is_topic:
        # Topic metrics come per region: a backlog is their sum, an age their maximum.
        return f"{'max' if metadata.metric_type.endswith('_age_by_region') else 'sum'}({aligned})"
    return aligned


def _distribution_promql(metadata: PubSubMetadata, metric: str, matchers: str, window: str) -> str:
    # A distribution (e.g. topic/message_sizes) is a histogram in PromQL; KEDA reads it only through an
    # aggregation over the horizon (MQL `align delta`), never as a bare point.
    aggregation = metadata.aggregation
    if not aggregation:
        raise InvalidMetadata(
            "aggregation",
            f"{metadata.mode} is a distribution metric: set `aggregation` (mean, median, sum, count or "
            "percentileNN) to read it, as in KEDA",
        )
    if aggregation in ("mean", "avg"):
        return f"sum(increase({metric}_sum{matchers}{window})) / sum(increase({metric}_count{matchers}{window}))"
    if aggregation in ("sum", "count"):
        return f"sum(increase({metric}_{aggregation}{matchers}{window}))"
    nn = 50 if aggregation == "median" else percentile(aggregation)
    return f"histogram_quantile({(nn or 0) / 100:g}, sum by (le) (increase({metric}_bucket{matchers}{window})))"


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
        project: str,
        identity: str,
        timeout: float,
        token: Callable[[], Awaitable[str]] | None,
    ) -> float:
        url = metadata.monitoring_url_in(project)
        headers = {"Authorization": f"Bearer {await token()}"} if token is not None else {}
        source = f"Cloud Monitoring PromQL API at {url}" if token is not None else f"PromQL API at {url}"
        query = build_promql(metadata, project)
        data = await instant_query(
            self.http,
            url,
            [("query", query)],
            headers=headers,
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
        return self._absent(metadata, project, key, query, now)

    def _absent(
        self, metadata: PubSubMetadata, project: str, key: tuple[str, str, str], query: str, now: float
    ) -> float:
        if metadata.value_if_null is not None:
            return metadata.value_if_null
        last = self._last_good.get(key)
        if last is not None and now - last.monotonic <= metadata.staleness_seconds:
            return last.value
        # As in KEDA, an absent series is an error (so KEDA's fallback applies) unless valueIfNull is set.
        raise SourceNotFound(
            f"the Cloud Monitoring series for {metadata.path_in(project)} is absent (query: {query}); it appears "
            "a few minutes after the first message, and is missing for idle objects: set `valueIfNull` to read "
            "it as a number, or `staleness` to keep the last good reading"
        )

    def prune(self) -> int:
        """Drop readings past their staleness, so deleted ScaledObjects leave nothing behind."""
        now = time.monotonic()
        expired = [key for key, last in self._last_good.items() if last.keep_until < now]
        for key in expired:
            del self._last_good[key]
        return len(expired)
