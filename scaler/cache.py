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

from .capacity import Lease, NamespaceBudget
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
class _Flight:
    """A query in flight and how many callers still wait for it."""

    task: asyncio.Task[Reading]
    started: float
    waiters: int = 0


@dataclass
class _Entry:
    reading: Reading | None = None
    error: AdapterError | None = None
    expires: float = 0.0
    last_reading: Reading | None = None  # the last good one, for the lastKnown policy
    last_used: float = field(default_factory=time.monotonic)
    inflight: _Flight | None = None


class MeasurementCache:
    def __init__(
        self,
        ttl: float,
        error_ttl: float,
        metrics: ScalerMetrics,
        *,
        max_timeout: float = math.inf,
        queries_per_namespace: int = 2,
    ) -> None:
        self.ttl = ttl
        self.error_ttl = error_ttl
        self.metrics = metrics
        self.max_timeout = max_timeout
        self.budget = NamespaceBudget(queries_per_namespace)
        self._entries: dict[SourceKey, _Entry] = {}
        self._capped: set[SourceKey] = set()

    def __len__(self) -> int:
        return len(self._entries)

    async def read(
        self,
        key: SourceKey,
        measure: Callable[[], Awaitable[float]],
        timeout: float,
        *,
        refresh: bool = False,
        namespace: str = "",
    ) -> Reading:
        """The cached reading while fresh, else one query shared by every concurrent caller.

        `refresh` asks for a reading taken now (joining one in flight), whatever the TTL: push pollers use
        it so that a stream is as fresh as the push interval, not push interval + TTL. A new query is paid
        for by `namespace`'s budget on the source's origin (see scaler/capacity.py).
        """
        entry = self._entry(key)
        if entry.inflight is None and (refresh or not self._fresh(entry)):
            timeout = self._capped_timeout(key, timeout)
            lease = await self.budget.acquire(key, namespace, timeout)
            # While this caller waited for a slot, another may have started the query or answered it.
            entry = self._entry(key)
            if entry.inflight is None and (refresh or not self._fresh(entry)):
                return await self._start(key, entry, measure, timeout, lease)
            lease.release()
        if entry.inflight is not None:
            self.metrics.count_cache("coalesced")
            return await self._wait(key, entry, entry.inflight)
        return self._hit(entry)

    def fresh(self, key: SourceKey) -> Reading | None:
        """The cached reading while fresh and nothing is in flight (the cached error is raised), else None.

        `read`'s warm case without an await: KEDA's calls mostly land here, and the service answers them
        without creating a coroutine per layer.
        """
        entry = self._entries.get(key)
        if entry is None or entry.inflight is not None:
            return None
        now = time.monotonic()
        if entry.expires <= now:
            return None
        entry.last_used = now
        return self._hit(entry)

    async def _start(
        self, key: SourceKey, entry: _Entry, measure: Callable[[], Awaitable[float]], timeout: float, lease: Lease
    ) -> Reading:
        self.metrics.count_cache("miss")
        # A task, not a bare await: a caller that gives up (KEDA cancelled the RPC) must not cancel
        # the query the other callers are waiting on; the last one to give up does (see _wait).
        task = asyncio.create_task(self._query(key, entry, measure, timeout, lease.left))
        task.add_done_callback(_retrieve_exception)
        task.add_done_callback(lambda _: lease.release())
        entry.inflight = _Flight(task, time.monotonic())
        return await self._wait(key, entry, entry.inflight)

    @staticmethod
    def _fresh(entry: _Entry) -> bool:
        return entry.expires > time.monotonic()

    def _entry(self, key: SourceKey) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
            self.metrics.cache_entries.set(len(self._entries))
        entry.last_used = time.monotonic()
        return entry

    def _hit(self, entry: _Entry) -> Reading:
        self.metrics.count_cache("hit")
        if entry.error is not None:
            raise entry.error.with_traceback(None)  # reused: keep its traceback from growing
        assert entry.reading is not None
        return entry.reading

    async def _wait(self, key: SourceKey, entry: _Entry, flight: _Flight) -> Reading:
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                # Every caller gave up (RPCs cancelled or past their deadline, pollers stopped): the query
                # would hold a pooled connection and its namespace's budget for nobody. Detached at once,
                # so a caller arriving in the meantime starts a query of its own instead of joining this one.
                flight.task.cancel()
                if entry.inflight is flight:
                    entry.inflight = None
                self._observe(key, "abandoned", flight.started)

    def _capped_timeout(self, key: SourceKey, timeout: float) -> float:
        if timeout <= self.max_timeout:
            return timeout
        if key not in self._capped:
            # Once per source, not per call: KEDA repeats the same trigger every poll.
            if len(self._capped) >= 10_000:
                self._capped.clear()
            self._capped.add(key)
            log.warning(
                "a trigger asks for a %gs source timeout; using max_source_timeout (%gs)",
                timeout,
                self.max_timeout,
                extra={"source": str(key)},
            )
        return self.max_timeout

    def last_good(self, key: SourceKey) -> Reading | None:
        entry = self._entries.get(key)
        return entry.last_reading if entry else None

    async def _query(
        self, key: SourceKey, entry: _Entry, measure: Callable[[], Awaitable[float]], timeout: float, left: float
    ) -> Reading:
        """One query, cut at `left`: what the wait for a budget slot left of the caller's `timeout`."""
        started = time.monotonic()
        try:
            try:
                async with asyncio.timeout(left):
                    value = await measure()
            except TimeoutError:
                capped = " (max_source_timeout)" if timeout == self.max_timeout else ""
                raise SourceTimeout(
                    f"{key.adapter} source {key.endpoint} did not answer within {timeout:g}s{capped}"
                ) from None
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
            if entry.inflight is not None and entry.inflight.task is asyncio.current_task():
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
