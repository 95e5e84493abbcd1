"""One poller per source for push streams, however many StreamIsActive streams watch that source.

A poller refreshes the source's cache entry every `interval` (fixed rate), so a stream sees a change
within one interval, and KEDA's polls and the HPA's reads of a watched source are served from that entry.
Each stream decides for itself whether its own activation threshold flipped; the poller only publishes readings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

from adapters.api import AdapterError, SourceKey

from .cache import MeasurementCache, Reading
from .capacity import CapacityExhausted
from .metrics import ScalerMetrics

log = logging.getLogger(__name__)

Update = Reading | AdapterError


class SourcePoller:
    def __init__(
        self,
        key: SourceKey,
        measure: Callable[[], Awaitable[float]],
        timeout: float,
        cache: MeasurementCache,
        interval: float,
        *,
        namespace: str,
    ) -> None:
        self.key = key
        self.subscribers = 0
        # Subscribers per namespace: a poller counts against the cap of every namespace watching it.
        self.namespaces: Counter[str] = Counter()
        self.namespace = namespace  # whose query budget its reads use: the namespace that started it
        self.latest: Update | None = None
        self.version = 0
        # One future per waiting stream, resolved when a reading is published. Not an asyncio.Condition
        # with a timeout per wait: at 2,000 streams that lock, Timeout and timer per stream per interval
        # were most of what a push update cost (py-spy at cluster scale).
        self._waiters: list[asyncio.Future[None]] = []
        self.closed = False
        self._measure, self._timeout, self._cache, self._interval = measure, timeout, cache, interval
        self.task = asyncio.create_task(self._run(), name=f"poller {key}")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        # The first reading at once, the second after a random part of the interval, then fixed rate:
        # pollers started together (KEDA reopening every stream, or one tenant opening a hundred) would
        # otherwise tick together, a burst of queries every interval that other calls queue behind.
        # No gap is ever longer than the interval.
        period = random.uniform(0, self._interval)
        while True:
            # Fixed rate, and a fresh reading each tick: reading through a still-valid cache entry would
            # let a change wait up to interval + TTL (measured: p95 activation latency ~2x the interval).
            next_tick = loop.time() + period
            period = self._interval
            try:
                update: Update = await self._cache.read(
                    self.key, self._measure, self._timeout, refresh=True, namespace=self.namespace
                )
            except AdapterError as error:
                update = error
            self.latest = update
            self.version += 1
            self._wake()
            await asyncio.sleep(max(0.0, next_tick - loop.time()))

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():  # a stream cancelled while waiting
                waiter.set_result(None)

    async def updates(self, until: float | None = None) -> AsyncIterator[Update]:
        """Every reading from now on, starting with the latest one if there is one; ends when closed, or at
        `until` (event loop time) if given."""
        loop = asyncio.get_running_loop()
        watch = _Watch()
        # One timer per stream, not one per wait. It only wakes the stream, which then ends: the deadline
        # never cancels anything, so it cannot cut the caller's write of an update.
        timer = loop.call_at(until, watch.expire) if until is not None else None
        seen = 0
        try:
            while True:
                while not (self.closed or watch.expired or self.version > seen):
                    watch.waiter = loop.create_future()
                    self._waiters.append(watch.waiter)
                    await watch.waiter
                if self.closed or watch.expired:
                    return
                seen = self.version
                update = self.latest
                assert update is not None
                yield update
        finally:
            if timer is not None:
                timer.cancel()

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.closed = True
        self._wake()


class _Watch:
    """One stream's wait: the future it waits on, and whether its deadline passed."""

    __slots__ = ("expired", "waiter")

    def __init__(self) -> None:
        self.waiter: asyncio.Future[None] | None = None
        self.expired = False

    def expire(self) -> None:
        self.expired = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class PushHub:
    def __init__(
        self, cache: MeasurementCache, interval: float, metrics: ScalerMetrics, max_per_namespace: int = 100
    ) -> None:
        self.cache = cache
        self.interval = interval
        self.metrics = metrics
        self.max_per_namespace = max_per_namespace
        self._pollers: dict[SourceKey, SourcePoller] = {}
        self._watched: Counter[str] = Counter()  # namespace -> pollers it subscribes to
        self.closing = False

    def __len__(self) -> int:
        return len(self._pollers)

    @contextlib.asynccontextmanager
    async def watch(
        self,
        key: SourceKey,
        measure: Callable[[], Awaitable[float]],
        timeout: float,
        namespace: str = "",
        until: float | None = None,
    ) -> AsyncIterator[AsyncIterator[Update]]:
        """Updates of `key`'s poller until `until` (loop time); CapacityExhausted when `namespace` may not
        watch one more source."""
        poller = self._pollers.get(key)
        if poller is None or poller.closed or not poller.namespaces[namespace]:
            # Joining another namespace's poller keeps it polling: it counts like starting one.
            self._check_cap(namespace)
        if poller is None or poller.closed:
            poller = self._pollers[key] = SourcePoller(
                key, measure, timeout, self.cache, self.interval, namespace=namespace
            )
            self.metrics.pollers.set(len(self._pollers))
        self._subscribe(poller, namespace, +1)
        try:
            yield poller.updates(until)
        finally:
            self._subscribe(poller, namespace, -1)
            # Nobody watches this source any more: stop polling it now rather than on a timer.
            if poller.subscribers == 0 and self._pollers.get(key) is poller:
                del self._pollers[key]
                self.metrics.pollers.set(len(self._pollers))
                await poller.close()

    def _check_cap(self, namespace: str) -> None:
        # Refuses the new stream only: the namespace's pollers already running keep running.
        if self._watched[namespace] >= self.max_per_namespace:
            raise CapacityExhausted(
                f"namespace '{namespace[:63]}' already watches {self._watched[namespace]} sources with push "
                f"streams (max_pollers_per_namespace={self.max_per_namespace})"
            )

    def _subscribe(self, poller: SourcePoller, namespace: str, delta: int) -> None:
        poller.subscribers += delta
        before = poller.namespaces[namespace]
        after = poller.namespaces[namespace] = before + delta
        if before == 0:  # this namespace's first stream on this source
            self._watched[namespace] += 1
        elif after == 0:  # its last one
            del poller.namespaces[namespace]
            self._watched[namespace] -= 1
            if not self._watched[namespace]:
                del self._watched[namespace]

    async def close(self) -> None:
        """Shutdown: every stream's update iterator ends, so streams finish with status OK."""
        self.closing = True
        pollers = list(self._pollers.values())
        self._pollers.clear()
        self.metrics.pollers.set(0)
        for poller in pollers:
            await poller.close()
