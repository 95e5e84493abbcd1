"""Shared capacity budgeted per tenant: source queries in flight per (origin, namespace).

Every ScaledObject on one origin shares that origin's pooled connections (16 per origin). Without a
budget, one namespace with a handful of slow queries holds all of them and every other namespace's calls
to that origin queue behind it until they time out. With a budget of `limit` queries in flight per
namespace and origin, a namespace holds at most `limit` connections; its further queries wait in its own
queue (not in the shared pool's), for at most their own timeout, then fail with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from adapters.api import AdapterError, SourceKey

_LEAST_LEFT = 0.25  # of the caller's timeout, for a query that waited for its slot


class CapacityExhausted(AdapterError):
    """A namespace used its share of an origin's capacity (a server limit, not the source's failure)."""

    status = "RESOURCE_EXHAUSTED"


def origin_of(key: SourceKey) -> str:
    """scheme://host:port of the source (what its pooled connections are per), or its endpoint as given."""
    if "://" not in key.endpoint:
        return key.endpoint  # e.g. a gRPC target, host:port
    parts = urlsplit(key.endpoint)
    return f"{parts.scheme.lower()}://{parts.netloc.rpartition('@')[2].lower()}"


@dataclass
class _Lane:
    slots: asyncio.Semaphore
    users: int = 0  # holders + waiters: the lane is forgotten when none is left


@dataclass
class Lease:
    """One slot of one lane; released exactly once (when the query it paid for ends)."""

    budget: NamespaceBudget
    lane: tuple[str, str]
    left: float  # seconds of the caller's timeout left for the query, after the wait for this slot
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.budget._release(self.lane)


class NamespaceBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lanes: dict[tuple[str, str], _Lane] = {}

    async def acquire(self, key: SourceKey, namespace: str, wait: float) -> Lease:
        """A slot for one query to `key`'s origin, waiting at most `wait` seconds for one."""
        name = (origin_of(key), namespace)
        lane = self._lanes.get(name)
        if lane is None:
            lane = self._lanes[name] = _Lane(asyncio.Semaphore(self.limit))
        lane.users += 1
        began = time.monotonic()
        try:
            async with asyncio.timeout(wait):
                await lane.slots.acquire()
        except TimeoutError:
            self._leave(name, lane)
            raise self._exhausted(name, namespace, wait) from None
        except BaseException:
            self._leave(name, lane)
            raise
        lease = Lease(self, name, wait - (time.monotonic() - began))
        # The wait and the query share the caller's timeout, so a call takes at most its timeout. A slot freed
        # with under a quarter of it left goes to nobody: such a query could hardly answer, and would still
        # open a connection to the origin as the namespace's earlier ones close.
        if lease.left < wait * _LEAST_LEFT:
            lease.release()
            raise self._exhausted(name, namespace, wait)
        return lease

    def _exhausted(self, name: tuple[str, str], namespace: str, wait: float) -> CapacityExhausted:
        return CapacityExhausted(
            f"namespace '{namespace[:63]}' already has {self.limit} source queries in flight to {name[0]} "
            f"(max_source_queries_per_namespace={self.limit}) and none ended within {wait:g}s"
        )

    def _release(self, name: tuple[str, str]) -> None:
        lane = self._lanes[name]
        lane.slots.release()
        self._leave(name, lane)

    def _leave(self, name: tuple[str, str], lane: _Lane) -> None:
        lane.users -= 1
        if lane.users == 0:
            del self._lanes[name]

    def __len__(self) -> int:
        return len(self._lanes)
