"""The shape every token-issuing provider shares: fetch a bearer token, cache it per identity, send it."""

from __future__ import annotations

from abc import abstractmethod

from ..http import HttpClients
from .request import AuthProvider, OutgoingRequest
from .tokens import Token, TokenCache


class BearerTokenProvider(AuthProvider):
    """Subclasses set `_identity` and `_cache` and implement `_fetch()`; the cache does the rest."""

    _identity: str
    _cache: TokenCache

    @property
    def identity(self) -> str:
        return self._identity

    @abstractmethod
    async def _fetch(self, http: HttpClients, timeout: float) -> Token[str]: ...

    async def token(self, http: HttpClients, *, timeout: float) -> str:
        return await self._cache.get(self._identity, lambda: self._fetch(http, timeout), name=self.name)

    async def apply(self, request: OutgoingRequest, http: HttpClients, *, timeout: float) -> OutgoingRequest:
        return request.with_header("Authorization", f"Bearer {await self.token(http, timeout=timeout)}")

    def invalidate(self) -> None:
        self._cache.forget(self._identity)
