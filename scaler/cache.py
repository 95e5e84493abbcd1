"""Readings keyed by source, not by ScaledObject: one query per source per TTL, however many callers.

Concurrent callers for a key share one in-flight query (coalescing). Failures are cached for a shorter
TTL, so a dead broker is asked once per `error_ttl`, not once per ScaledObject per poll.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from adapters.api import AdapterError, SourceKey, SourcePrecondition, SourceTimeout

from .metrics import ScalerMetrics

log = logging.getLogger(__name__)


class AdapterBug(AdapterError):
    """An adapter raised something that is not an AdapterError: a defect in the adapter, reported as INTERNAL."""

    status = "INTERNAL"


@dataclass(frozen=True, slots=True)
class Reading:
    value: float
    taken_at: float  # wall clock, for reading-age metrics
    monotonic: float


@dataclass
class _Entry:
    reading: Reading | None = None
    error: AdapterError | None = None
    expires: float = 0.0
    last_reading: Reading | None = None  # the last good one, for the lastKnown policy
    last_used: float = field(default_factory=time.monotonic)
    inflight: asyncio.Task[Reading] | None = None


class MeasurementCache:
    def __init__(self, ttl: float, error_ttl: float, metrics: ScalerMetrics) -> None:
        self.ttl = ttl
        self.error_ttl = error_ttl
        self.metrics = metrics
        self._entries: dict[SourceKey, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def read(
        self, key: SourceKey, measure: Callable[[], Awaitable[float]], timeout: float, *, refresh: bool = False
    ) -> Reading:
        """The cached reading while fresh, else one query shared by every concurrent caller.

        `refresh` asks for a reading taken now (joining one in flight), whatever the TTL: push pollers use
        it so that a stream is as fresh as the push interval, not push interval + TTL.
        """
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
            self.metrics.cache_entries.set(len(self._entries))
        entry.last_used = now
        if entry.inflight is None and entry.expires > now and not refresh:
            self.metrics.count_cache("hit")
            if entry.error is not None:
                raise entry.error.with_traceback(None)  # reused: keep its traceback from growing
            assert entry.reading is not None
            return entry.reading
        if entry.inflight is not None:
            self.metrics.count_cache("coalesced")
        else:
            self.metrics.count_cache("miss")
            # A task, not a bare await: a caller that gives up (KEDA cancelled the RPC) must not cancel
            # the query the other callers are waiting on.
            entry.inflight = asyncio.create_task(self._query(key, entry, measure, timeout))
            entry.inflight.add_done_callback(_retrieve_exception)
        return await asyncio.shield(entry.inflight)

    def last_good(self, key: SourceKey) -> Reading | None:
        entry = self._entries.get(key)
        return entry.last_reading if entry else None

    async def _query(
        self, key: SourceKey, entry: _Entry, measure: Callable[[], Awaitable[float]], timeout: float
    ) -> Reading:
        started = time.monotonic()
        try:
            try:
                async with asyncio.timeout(timeout):
                    value = await measure()
            except TimeoutError:
                raise SourceTimeout(f"{key.adapter} source {key.endpoint} did not answer within {timeout:g}s") from None
            except AdapterError:
                raise
            except Exception as exc:
                log.exception("adapter %s failed unexpectedly", key.adapter, extra={"source": str(key)})
                raise AdapterBug(f"adapter '{key.adapter}' failed unexpectedly ({type(exc).__name__})") from None
            reading = Reading(_finite(key, value), time.time(), time.monotonic())
        except AdapterError as error:
            self._observe(key, error.status.lower(), started)
            entry.error, entry.reading = error, None
            entry.expires = time.monotonic() + self.error_ttl
            raise
        finally:
            entry.inflight = None
        self._observe(key, "success", started)
        entry.reading, entry.error, entry.last_reading = reading, None, reading
        entry.expires = reading.monotonic + self.ttl
        return reading

    def _observe(self, key: SourceKey, outcome: str, started: float) -> None:
        self.metrics.source_queries.labels(key.adapter, outcome).inc()
        self.metrics.source_seconds.labels(key.adapter).observe(time.monotonic() - started)

    def evict_idle(self, max_idle: float) -> int:
        cutoff = time.monotonic() - max_idle
        stale = [k for k, e in self._entries.items() if e.last_used < cutoff and e.inflight is None]
        for key in stale:
            del self._entries[key]
        self.metrics.cache_entries.set(len(self._entries))
        return len(stale)


def _retrieve_exception(task: asyncio.Task[Reading]) -> None:
    # When every waiter was cancelled (a stream closed, KEDA gave up), nobody reads the failure; without
    # this, asyncio logs "Task exception was never retrieved" with a traceback for each one.
    if not task.cancelled():
        task.exception()


def _finite(key: SourceKey, value: float) -> float:
    # KEDA turns NaN, Inf and negatives into 0 silently; we refuse NaN/Inf loudly and floor negatives.
    value = float(value)
    if not math.isfinite(value):
        raise SourcePrecondition(f"{key.adapter} source {key.object!r} returned a non-finite reading")
    return max(0.0, value)
