"""Tokens cached per credentials identity, refreshed ahead of expiry, fetched once however many ask.

A token source is anything that can fetch a fresh token (an OAuth2 endpoint, STS, a Google key). The
cache holds one entry per identity digest: every trigger with the same credentials shares one token, and
a burst of queries at start-up or at refresh time makes one request to the token endpoint, not one each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from ..errors import AdapterError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Refresh this far ahead of expiry: 60 s, or a fifth of the lifetime for short-lived tokens, so a token
# is never sent in its last seconds (clock skew, a slow query) and a refresh failure has time to recover.
REFRESH_AHEAD_SECONDS = 60.0
REFRESH_AHEAD_FRACTION = 0.2
# After a failed refresh while the old token is still good, wait this long before trying again, so a
# token endpoint that is down is not hit by every query.
RETRY_AFTER_FAILURE_SECONDS = 5.0
# Tenants choose credentials: a bounded number of identities are kept, least recently used dropped first.
MAX_ENTRIES = 4096


def now() -> float:
    """The cache's clock (monotonic seconds); one function so tests can move it instead of sleeping."""
    return time.monotonic()


@dataclass(frozen=True, slots=True)
class Token(Generic[T]):
    """A credential and when it stops being valid (time.monotonic() seconds; None: never expires)."""

    value: T = field(repr=False)
    expires_at: float | None

    @classmethod
    def lasting(cls, value: T, seconds: float | None) -> Token[T]:
        return cls(value, None if seconds is None else now() + max(0.0, seconds))

    def valid(self, at: float) -> bool:
        return self.expires_at is None or at < self.expires_at

    def refresh_at(self, issued: float) -> float | None:
        if self.expires_at is None:
            return None
        lifetime = self.expires_at - issued
        return self.expires_at - min(REFRESH_AHEAD_SECONDS, lifetime * REFRESH_AHEAD_FRACTION)


class _Entry:
    # Values of any type (a bearer string, AWS credentials): the provider that stored it reads it back.
    def __init__(self) -> None:
        self.token: Token[Any] | None = None
        self.refresh_at: float | None = None
        self.retry_at = 0.0
        self.inflight: asyncio.Future[Token[Any]] | None = None
        self.fetches = 0


class TokenCache:
    """One entry per identity digest. Call `get(identity, fetch)`; `fetch` runs at most once at a time."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._max_entries = max_entries

    def fetches(self, identity: str) -> int:
        entry = self._entries.get(identity)
        return entry.fetches if entry else 0

    def forget(self, identity: str) -> None:
        """Drop a token the source refused (HTTP 401 with it): the next call fetches a new one."""
        self._entries.pop(identity, None)

    async def get(self, identity: str, fetch: Callable[[], Awaitable[Token[T]]], *, name: str) -> T:
        entry = self._entry(identity)
        current = now()
        token = entry.token
        if token is not None and token.valid(current):
            due = entry.refresh_at is not None and current >= entry.refresh_at and current >= entry.retry_at
            if not due or entry.inflight is not None:
                return cast(T, token.value)
            # Due for refresh and still valid: this caller refreshes; a failure keeps the old token.
            try:
                return (await self._fetch(entry, fetch)).value
            except AdapterError as exc:
                entry.retry_at = now() + RETRY_AFTER_FAILURE_SECONDS
                log.warning("%s: refreshing the token failed, the current one is still valid: %s", name, exc.message)
                return cast(T, token.value)
        return (await self._fetch(entry, fetch)).value

    def _entry(self, identity: str) -> _Entry:
        entry = self._entries.get(identity)
        if entry is None:
            entry = self._entries[identity] = _Entry()
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(identity)
        return entry

    async def _fetch(self, entry: _Entry, fetch: Callable[[], Awaitable[Token[T]]]) -> Token[T]:
        if entry.inflight is None:
            # The cache owns the fetch: a caller whose own deadline passes (cancelled) must not cancel
            # the token request every other waiter shares. It ends within the provider's timeout.
            entry.fetches += 1
            entry.inflight = asyncio.ensure_future(self._run(entry, fetch))
            # Retrieved even when every waiter was cancelled, so asyncio does not log it as lost.
            entry.inflight.add_done_callback(lambda task: task.cancelled() or task.exception())
        return await asyncio.shield(entry.inflight)

    @staticmethod
    async def _run(entry: _Entry, fetch: Callable[[], Awaitable[Token[Any]]]) -> Token[Any]:
        try:
            issued = now()
            token = await fetch()
            entry.token = token
            entry.refresh_at = token.refresh_at(issued)
            return token
        finally:
            entry.inflight = None


TOKENS = TokenCache()
"""The process-wide cache: every provider uses it unless a test hands it its own."""
