"""Clients shared by every ScaledObject: one per key (endpoint + credentials), created once, closed when idle."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
C = TypeVar("C")

log = logging.getLogger(__name__)


@dataclass
class _Slot(Generic[C]):
    client: C
    last_used: float = field(default_factory=time.monotonic)


class ClientPool(Generic[K, C]):
    """A keyed pool of long-lived clients.

    `get()` for a key that is being created waits for that one creation instead of opening a second
    client, which is what stops a thundering herd of ScaledObjects from opening N connections.
    """

    def __init__(
        self,
        name: str,
        create: Callable[[K], Awaitable[C]],
        close: Callable[[C], Awaitable[None]],
    ) -> None:
        self.name = name
        self._create = create
        self._close = close
        self._slots: dict[K, _Slot[C]] = {}
        self._creating: dict[K, asyncio.Future[C]] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, key: object) -> bool:
        return key in self._slots

    async def get(self, key: K) -> C:
        slot = self._slots.get(key)
        if slot is not None:
            slot.last_used = time.monotonic()
            return slot.client
        pending = self._creating.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[C] = asyncio.get_running_loop().create_future()
        self._creating[key] = future
        try:
            client = await self._create(key)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters (if any) get it via shield
            raise
        finally:
            del self._creating[key]
        self._slots[key] = _Slot(client)
        future.set_result(client)
        return client

    async def discard(self, key: K) -> None:
        """Close and forget one client (it broke); the next get() creates a fresh one."""
        slot = self._slots.pop(key, None)
        if slot is not None:
            await self._close_quietly(slot.client)

    async def close_idle(self, max_idle: float) -> int:
        cutoff = time.monotonic() - max_idle
        stale = [k for k, s in self._slots.items() if s.last_used < cutoff]
        for key in stale:
            await self.discard(key)
        return len(stale)

    async def close_all(self) -> None:
        for key in list(self._slots):
            await self.discard(key)

    async def _close_quietly(self, client: C) -> None:
        try:
            await self._close(client)
        except Exception as exc:  # closing a broken client must not break the caller
            log.debug("closing a %s client failed: %s", self.name, type(exc).__name__)
