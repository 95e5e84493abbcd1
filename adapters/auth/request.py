"""The request an auth provider adds credentials to, and the interface every provider implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from ..errors import SourceUnauthenticated
from ..http import MAX_RESPONSE_BYTES, HttpClients, HttpEndpoint
from ..redaction import SECRETS


@dataclass(frozen=True, slots=True)
class OutgoingRequest:
    """What is about to be sent. `params` are appended to `url`'s own query (which may be empty)."""

    method: str
    url: str
    params: tuple[tuple[str, str], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = field(default=b"", repr=False)

    def with_header(self, name: str, value: str) -> OutgoingRequest:
        kept = tuple((k, v) for k, v in self.headers if k.lower() != name.lower())
        return replace(self, headers=(*kept, (name, value)))

    def with_param(self, name: str, value: str) -> OutgoingRequest:
        return replace(self, params=(*self.params, (name, value)))

    def header_dict(self) -> dict[str, str]:
        return dict(self.headers)

    def __repr__(self) -> str:
        # Headers and parameters carry credentials once a provider has run: never print them.
        parts = urlsplit(self.url)
        return f"OutgoingRequest({self.method} {parts.scheme}://{parts.hostname}{parts.path})"


class AuthProvider(ABC):
    """Adds one kind of credentials to a request. One job, no I/O unless it must fetch a token.

    `name` says which provider it is in error messages ("OAuth2 client credentials"); `identity` is a
    digest of the credentials (never the secret) for source keys and token caches; `addresses()` are the
    (metadata key, URL) pairs the provider will connect to, for the egress policy.
    """

    name: str = "auth"
    ambient: bool = False
    """True when the credentials are the scaler pod's own (ADC, IRSA, Azure workload identity), not the trigger's."""

    @property
    @abstractmethod
    def identity(self) -> str: ...

    @abstractmethod
    async def apply(self, request: OutgoingRequest, http: HttpClients, *, timeout: float) -> OutgoingRequest:
        """The request with credentials added. Raises SourceUnauthenticated when a token is refused."""

    def addresses(self) -> list[tuple[str, str]]:
        return []

    def invalidate(self) -> None:
        """The source refused what this provider sent: drop any cached token so the next request gets a new one."""
        return  # static credentials have nothing to drop

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} identity={self.identity}>"

    __str__ = __repr__


def register_secrets(*values: str) -> None:
    """Every value a provider holds or obtains goes here, so the log filter and error redaction drop it."""
    SECRETS.add(*values)


async def send_json(
    http: HttpClients,
    request: OutgoingRequest,
    *,
    endpoint: HttpEndpoint,
    source: str,
    timeout: float,
    max_bytes: int = MAX_RESPONSE_BYTES,
) -> Any:
    """Send a bodiless request (as the sources' GETs are) through the project's HTTP client."""
    if request.body:
        raise ValueError("send_json sends no body; form posts go through HttpClients.get_json(data=...)")
    return await http.get_json(
        request.url,
        endpoint=endpoint,
        source=source,
        timeout=timeout,
        params=list(request.params) or None,
        headers=request.header_dict(),
        method=request.method,
        max_bytes=max_bytes,
    )


async def send_authenticated(
    http: HttpClients,
    request: OutgoingRequest,
    providers: Sequence[AuthProvider],
    *,
    endpoint: HttpEndpoint,
    source: str,
    timeout: float,
    max_bytes: int = MAX_RESPONSE_BYTES,
) -> Any:
    """Add every provider's credentials, send, decode JSON: what an adapter calls for each query.

    A 401 from the source names the providers that were used, and drops their cached tokens (a revoked
    token must not be reused until it expires).
    """
    signed = await apply_all(providers, request, http, timeout=timeout)
    try:
        return await send_json(http, signed, endpoint=endpoint, source=source, timeout=timeout, max_bytes=max_bytes)
    except SourceUnauthenticated as exc:
        if not providers:
            raise
        for provider in providers:
            provider.invalidate()
        names = ", ".join(provider.name for provider in providers)
        raise SourceUnauthenticated(f"{exc.message} (credentials sent: {names})") from None


async def apply_all(
    providers: Sequence[AuthProvider], request: OutgoingRequest, http: HttpClients, *, timeout: float
) -> OutgoingRequest:
    """Run each provider in order; a signer (SigV4) must come last, since it signs what the others added."""
    for provider in providers:
        request = await provider.apply(request, http, timeout=timeout)
    return request
