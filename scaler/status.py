"""What every ScaledObject trigger is doing, for the status page: a bounded table fed by the service.

The service calls `reading`, `failed` and `streaming` where it already records readings and errors. Those
calls run for every gRPC call (~1,300/s at cluster scale), so they only update fields of an existing row:
the row's description (source, index) is built once, when the row is created; a repeated error (the cache
and the parser hand out the same error object while it holds) is redacted once; the history is a fixed
ring of floats. Everything else (replica counts, ratios, sorting, JSON) happens when the page is read.

Memory is bounded: at most `max_rows` rows (new ones are counted, not stored, beyond that), `HISTORY`
readings each, and rows leave `ttl` seconds after their last call, like the /metrics series.
"""

from __future__ import annotations

import contextlib
import re
import time
from array import array
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from adapters.api import AdapterError, redact

from . import __version__
from .replicas import from_reading

HISTORY = 30  # readings per sparkline: an hour of KEDA's default 30 s polling would be 120; 30 shows the trend
ERROR_WINDOW = 300.0  # "errors in the last 5 minutes"
_BUCKET = 10.0  # seconds per error-count bucket
_FULL_SWEEP_INTERVAL = 1.0  # seconds between sweeps of a full table (see StatusBoard._row)
_MESSAGE_MAX = 300
_SOURCE_MAX = 240
_INDEXED = re.compile(r"s(\d{1,4})-(.+)", re.DOTALL)


def describe_source(trigger: Any) -> str:
    """One redacted line: endpoint (no userinfo), then vhost/queue, query or subscription, then the mode."""
    key = trigger.source_key
    where = "/".join([*key.scope, key.object]) if key.scope else key.object
    text = f"{key.endpoint} {where}".strip() + (f" ({key.mode})" if key.mode else "")
    return redact(" ".join(text.split()))[:_SOURCE_MAX]


@dataclass(slots=True)
class Row:
    namespace: str
    name: str
    metric: str
    adapter: str
    source: str = ""
    source_id: str = ""
    index: int | None = None
    requested_name: str = ""
    target: float | None = None
    activation: float | None = None
    value: float | None = None
    read_at: float | None = None
    active: bool | None = None
    stale: bool = False
    asked_at: float = 0.0
    ok_at: float = 0.0
    error: AdapterError | None = None
    error_code: str = ""
    error_message: str = ""
    error_at: float | None = None
    streams: int = 0
    history: array[float] = field(default_factory=lambda: array("d"))
    history_next: int = 0  # ring position once the history is full

    def remember(self, value: float) -> None:
        if len(self.history) < HISTORY:
            self.history.append(value)
        else:
            self.history[self.history_next] = value
            self.history_next = (self.history_next + 1) % HISTORY

    def readings(self) -> list[float]:
        """The history, oldest first."""
        return [*self.history[self.history_next :], *self.history[: self.history_next]]


class StatusBoard:
    def __init__(self, ttl: float, max_rows: int = 5000) -> None:
        self.ttl = ttl
        self.max_rows = max_rows
        self.started = time.time()
        self.rows: dict[tuple[str, str, str], Row] = {}
        self.refused = 0  # rows not stored because the table was full
        self._next_full_sweep = 0.0  # monotonic time the next sweep for a full table may run
        self._errors: deque[list[float]] = deque(maxlen=int(ERROR_WINDOW / _BUCKET) + 1)  # [bucket start, count]

    # --- the service's hooks (hot path) -----------------------------------------------------------

    def _row(self, ref: Any, trigger: Any | None) -> Row | None:
        metric = trigger.metric_name if trigger is not None else ""
        key = (ref.namespace, ref.name, metric)
        row = self.rows.get(key)
        if row is None:
            if len(self.rows) >= self.max_rows:
                # At most one sweep per interval while full: a sweep reads every row, and with more triggers
                # than rows every call of an object without a row swept the whole table (14% of the
                # scaler's samples at 10,000 ScaledObjects over the default 5,000 rows). Rows only expire
                # after `ttl` (minutes), so sweeping more often would reclaim next to nothing.
                now = time.monotonic()
                if now >= self._next_full_sweep:
                    self._next_full_sweep = now + _FULL_SWEEP_INTERVAL
                    self.sweep()
                if len(self.rows) >= self.max_rows:
                    self.refused += 1
                    return None
            row = self.rows[key] = self._new_row(ref, trigger)
        row.asked_at = time.time()
        return row

    @staticmethod
    def _new_row(ref: Any, trigger: Any | None) -> Row:
        if trigger is None:  # metadata that did not parse: the adapter is whatever it asked for, bounded
            return Row(ref.namespace, ref.name, "", str(ref.scalerMetadata.get("adapter", ""))[:40])
        return Row(
            ref.namespace,
            ref.name,
            trigger.metric_name,
            trigger.adapter.name,
            source=describe_source(trigger),
            source_id=str(trigger.source_key),
            target=trigger.target,
            activation=trigger.activation_target,
        )

    def reading(
        self,
        ref: Any,
        trigger: Any,
        value: float | None,
        read_at: float,
        *,
        stale: bool = False,
        active: bool | None = None,
        requested: str = "",
    ) -> None:
        """A reading served (GetMetrics: `value`; IsActive and pushes: `active`, and `value` when it is the
        same source). `requested`: GetMetrics' metricName, which carries the trigger index as `s<i>-`."""
        row = self._row(ref, trigger)
        if row is None:
            return
        row.ok_at = row.asked_at
        row.stale = stale
        if active is not None:
            row.active = active
        if value is not None:
            if read_at != row.read_at:  # a new reading, not the cached one again
                row.remember(value)
            row.value, row.read_at = value, read_at
        if requested and requested != row.requested_name:
            row.requested_name = requested
            match = _INDEXED.fullmatch(requested)
            if match is not None and match.group(2) == row.metric:
                row.index = int(match.group(1))

    def failed(self, ref: Any, trigger: Any | None, error: AdapterError) -> None:
        """A call that got `error` (a source error, or metadata that did not parse when `trigger` is None)."""
        now = time.time()
        bucket = now - now % _BUCKET
        if self._errors and self._errors[-1][0] == bucket:
            self._errors[-1][1] += 1
        else:
            self._errors.append([bucket, 1])
        row = self._row(ref, trigger)
        if row is None:
            return
        row.error_at = now
        if error is not row.error:
            row.error, row.error_code = error, error.status
            row.error_message = redact(error.message)[:_MESSAGE_MAX]

    @contextlib.contextmanager
    def streaming(self, ref: Any, trigger: Any) -> Iterator[None]:
        """While a StreamIsActive for this trigger is open."""
        row = self._row(ref, trigger)
        if row is not None:
            row.streams += 1
        try:
            yield
        finally:
            if row is not None:
                row.streams -= 1

    # --- upkeep and the page ------------------------------------------------------------------------

    def sweep(self) -> int:
        cutoff = time.time() - self.ttl
        gone = [key for key, row in self.rows.items() if row.asked_at < cutoff and not row.streams]
        for key in gone:
            del self.rows[key]
        return len(gone)

    def errors_recently(self, now: float) -> int:
        return sum(int(count) for start, count in self._errors if start + _BUCKET > now - ERROR_WINDOW)

    def snapshot(
        self, *, namespace: str = "", errors_only: bool = False, limit: int = 500, cache_hit_ratio: float | None = None
    ) -> dict[str, Any]:
        """The page's data: a summary over every row, and the rows the filter keeps (at most `limit`)."""
        self.sweep()
        now = time.time()
        rows = sorted(
            self.rows.values(), key=lambda r: (r.namespace, r.name, -1 if r.index is None else r.index, r.metric)
        )
        kept = [r for r in rows if (not namespace or r.namespace == namespace) and (not errors_only or r.error_at)]
        return {
            "version": __version__,
            "uptime_seconds": round(now - self.started, 1),
            "summary": {
                "scaledobjects": len({(r.namespace, r.name) for r in rows}),
                "triggers": len(rows),
                "sources": len({r.source_id for r in rows if r.source_id}),
                "open_streams": sum(r.streams for r in rows),
                "cache_hit_ratio": cache_hit_ratio,
                "errors_5m": self.errors_recently(now),
                "failing": sum(1 for r in rows if _failing(r)),
                "rows_refused": self.refused,
            },
            "filter": {"namespace": namespace, "errors": errors_only, "matched": len(kept), "limit": limit},
            "namespaces": sorted({r.namespace for r in rows})[:500],
            "rows": [_row_json(r, now) for r in kept[:limit]],
        }


def _failing(row: Row) -> bool:
    return row.error_at is not None and row.error_at >= row.ok_at


def _age(now: float, at: float | None) -> float | None:
    return None if at is None else round(max(0.0, now - at), 1)


def _row_json(row: Row, now: float) -> dict[str, Any]:
    replicas = None
    if row.value is not None and row.target and row.active is not None:
        replicas = from_reading(row.value, row.target, row.active)
    return {
        "namespace": row.namespace,
        "scaledobject": row.name,
        "trigger_index": row.index,
        "adapter": row.adapter,
        "metric": row.metric,
        "source": row.source,
        "value": row.value,
        "age_seconds": _age(now, row.read_at),
        "target": row.target,
        "activation_target": row.activation,
        "active": row.active,
        "replicas": replicas,
        "stream_open": row.streams > 0,
        "stale": row.stale,
        "failing": _failing(row),
        "error": None
        if row.error_at is None
        else {"code": row.error_code, "message": row.error_message, "age_seconds": _age(now, row.error_at)},
        "last_call_age_seconds": _age(now, row.asked_at),
        "history": row.readings(),
    }


class NoStatus(StatusBoard):
    """`status_page: false`: the hooks cost one method call and keep nothing."""

    def __init__(self) -> None:
        super().__init__(ttl=0, max_rows=0)

    def reading(self, *args: Any, **kwargs: Any) -> None:
        return None

    def failed(self, *args: Any, **kwargs: Any) -> None:
        return None

    @contextlib.contextmanager
    def streaming(self, ref: Any, trigger: Any) -> Iterator[None]:
        yield
