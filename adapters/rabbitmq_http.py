"""RabbitMQ's management HTTP API: one queue object, or every page of a regex match, reduced to QueueStats.

Requests go through the engine's shared HTTP clients (one pool per management endpoint). Unlike KEDA,
a regex match is read page by page to the end instead of failing past the first page (kedacore/keda#7143),
up to a bound: the broker's `page_count` decides how many requests a reading makes, so it is checked, and a
match larger than MAX_PAGES pages or MAX_QUEUES queues is refused instead of read.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from .api import (
    HttpClients,
    HttpEndpoint,
    SourceNotFound,
    SourcePrecondition,
    SourceRejectedQuery,
    SourceTimeout,
    SourceUnavailable,
)
from .auth import AuthProvider, OutgoingRequest, send_authenticated

Operation = Literal["sum", "max", "avg"]

# Work per reading, whatever the broker (or something posing as one) answers: a management API answering
# `page_count: 1e9` got 1,887 requests in 8 s from one trigger. 20 pages are 2,000 queues at the default
# pageSize, 10,000 at the largest; more than that is not a scaling signal one reading should gather.
MAX_PAGES = 20
MAX_QUEUES = 10_000
# A page of 500 queues with only _COLUMNS is ~100 KiB; 2 MiB leaves room and keeps json.loads short.
MAX_ANSWER_BYTES = 2 * 1024 * 1024

# Only the fields a reading needs: a queue object with full stats is several kilobytes.
_COLUMNS = ",".join(
    (
        "name",
        "messages",
        "messages_ready",
        "message_stats.publish_details.rate",
        "message_stats.deliver_get_details.rate",
    )
)


@dataclass(frozen=True, slots=True)
class QueueStats:
    messages: float  # ready + unacknowledged
    ready: float
    publish_rate: float
    deliver_get_rate: float


@dataclass(frozen=True, slots=True)
class ManagementQuery:
    """Where and how to ask: `base_url` is scheme://host:port plus any path prefix, without userinfo."""

    base_url: str
    endpoint: HttpEndpoint
    vhost: str
    queue: str
    auth: tuple[str, str] | None
    timeout: float
    providers: tuple[AuthProvider, ...] = ()  # OAuth2 / Azure workload identity (adapters/auth), instead of `auth`

    @property
    def queues_url(self) -> str:
        return f"{self.base_url}/api/queues/{quote(self.vhost, safe='')}"

    @property
    def source(self) -> str:
        return f"the RabbitMQ management API at {self.base_url}"


def _number(value: Any) -> float:
    # Stats are absent until the broker has emitted them for a new or idle queue: that reads as 0.
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _rate(item: dict[str, Any], name: str) -> float:
    stats = item.get("message_stats")
    details = stats.get(name) if isinstance(stats, dict) else None
    return _number(details.get("rate")) if isinstance(details, dict) else 0.0


def stats_of(item: Any) -> QueueStats:
    if not isinstance(item, dict):
        raise SourceUnavailable("the RabbitMQ management API returned a queue that is not a JSON object")
    return QueueStats(
        messages=_number(item.get("messages")),
        ready=_number(item.get("messages_ready")),
        publish_rate=_rate(item, "publish_details"),
        deliver_get_rate=_rate(item, "deliver_get_details"),
    )


def combine(stats: Sequence[QueueStats], operation: Operation) -> QueueStats:
    """Several matched queues as one, field by field; no match reads as an empty queue (as in KEDA)."""
    if not stats:
        return QueueStats(0.0, 0.0, 0.0, 0.0)
    columns = list(zip(*((s.messages, s.ready, s.publish_rate, s.deliver_get_rate) for s in stats), strict=True))
    if operation == "max":
        values = [max(c) for c in columns]
    elif operation == "avg":
        values = [sum(c) / len(c) for c in columns]
    else:
        values = [sum(c) for c in columns]
    return QueueStats(*values)


async def read_queue(http: HttpClients, query: ManagementQuery) -> QueueStats:
    url = f"{query.queues_url}/{quote(query.queue, safe='')}"
    try:
        item = await _get(http, query, url, [("columns", _COLUMNS)], query.timeout)
    except SourceNotFound:
        raise SourceNotFound(
            f"queue '{query.queue}' not found in vhost '{query.vhost}' ({query.source} answered 404)"
        ) from None
    return stats_of(item)


async def read_matching(http: HttpClients, query: ManagementQuery, page_size: int, operation: Operation) -> QueueStats:
    """Every queue whose name matches the regex in `query.queue`, over every page, combined by `operation`."""
    deadline = time.monotonic() + query.timeout
    found: list[QueueStats] = []
    page, page_count = 1, 1
    while page <= page_count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SourceTimeout(f"{query.source} did not return all pages within {query.timeout:g}s")
        try:
            params = [
                ("page", str(page)),
                ("page_size", str(page_size)),
                ("use_regex", "true"),
                ("name", query.queue),
                ("columns", _COLUMNS),
            ]
            body = await _get(http, query, query.queues_url, params, remaining)
        except SourceNotFound:
            raise SourceNotFound(f"vhost '{query.vhost}' not found ({query.source} answered 404)") from None
        except SourceRejectedQuery:
            if page == 1:
                raise
            break  # queues were deleted while we paged ("page out of range"): the next reading sees the rest
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            raise SourceUnavailable(f"{query.source} did not return a page of queues")
        page_count = _page_count(body, query)
        if page_count > MAX_PAGES:
            raise SourcePrecondition(
                f"useRegex: the match has {page_count} pages of {page_size} queues, more than the limit of "
                f"{MAX_PAGES} pages per reading; narrow `queueName` or raise `pageSize` (at most 500)"
            )
        found.extend(stats_of(item) for item in body["items"])
        if len(found) > MAX_QUEUES:
            raise SourcePrecondition(
                f"useRegex: the match has more than the limit of {MAX_QUEUES:,} queues per reading; narrow `queueName`"
            )
        page += 1
    return combine(found, operation)


async def _get(
    http: HttpClients, query: ManagementQuery, url: str, params: list[tuple[str, str]], timeout: float
) -> Any:
    if query.providers:
        request = OutgoingRequest("GET", url, tuple(params))
        return await send_authenticated(
            http,
            request,
            query.providers,
            endpoint=query.endpoint,
            source=query.source,
            timeout=timeout,
            max_bytes=MAX_ANSWER_BYTES,
        )
    return await http.get_json(
        url,
        endpoint=query.endpoint,
        source=query.source,
        timeout=timeout,
        params=params,
        auth=query.auth,
        max_bytes=MAX_ANSWER_BYTES,
    )


def _page_count(body: dict[str, Any], query: ManagementQuery) -> int:
    # RabbitMQ sends a JSON integer; anything else (1e9 is a float, "5" a string) is not its answer.
    count = body.get("page_count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise SourceUnavailable(f"{query.source} returned a page of queues without a valid `page_count`")
    return count
