"""HTTP plumbing shared by every adapter that speaks HTTP (Prometheus, RabbitMQ management, Cloud Monitoring).

One aiohttp session (one connection pool) per endpoint and TLS settings for the whole process; errors
become the adapter errors the engine maps to gRPC codes. Adapters say what to ask, never how to connect.

aiohttp, not httpx: at cluster scale the source queries are most of the scaler's CPU, and on this
project's benchmark machine an httpx query cost 0.55 ms of CPU against aiohttp's 0.15 ms (BENCHMARKS.md).
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .errors import (
    AdapterError,
    SourceNotFound,
    SourcePermissionDenied,
    SourceRejectedQuery,
    SourceTimeout,
    SourceUnauthenticated,
    SourceUnavailable,
)
from .files import TlsFiles, client_tls_context
from .pool import ClientPool
from .redaction import strip_userinfo
from .resolve import Resolve, system_resolve

if TYPE_CHECKING:
    # Imported where first used, not at start: importing aiohttp loads the system's CA store (~0.1-0.25 s
    # of a 2-core machine's start), which a scaler serving only AMQP or Pub/Sub triggers never needs.
    import aiohttp

_MAX_ERROR_BODY = 300
# Per origin (and TLS settings). Twice the old 8, so that with the engine's budget of 2 queries in flight
# per namespace and origin (max_source_queries_per_namespace), 7 other namespaces can be slow at once
# before a victim waits for a connection. Still few enough to keep all alive (see _create).
_MAX_CONNECTIONS = 16
# A source answering with an endless or huge body must not take the scaler's memory with it, nor the event
# loop: json.loads holds the loop (and the GIL) for the whole body. The default is the ceiling; adapters
# pass a lower `max_bytes` where answers are known to be small (a Prometheus instant query: 1 MiB).
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
_USER_AGENT = "keda-queue-scaler"


@dataclass(frozen=True, slots=True)
class HttpEndpoint:
    """What a pooled client is keyed by: origin and TLS settings (never the credentials: they go per request)."""

    origin: str
    verify: bool = True
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    # PEM contents (KEDA's `ca`, `cert`, `key`, `keyPassword`): never printed; they win over the files.
    ca_pem: str = field(default="", repr=False)
    cert_pem: str = field(default="", repr=False)
    key_pem: str = field(default="", repr=False)
    key_password: str = field(default="", repr=False)

    @classmethod
    def for_url(
        cls,
        url: str,
        *,
        verify: bool = True,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        ca_pem: str = "",
        cert_pem: str = "",
        key_pem: str = "",
        key_password: str = "",
    ) -> HttpEndpoint:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        origin = f"{parts.scheme}://{host}{port}"
        return cls(origin, verify, ca_file, cert_file, key_file, ca_pem, cert_pem, key_pem, key_password)

    def tls_files(self) -> TlsFiles:
        return TlsFiles(
            self.ca_file or "",
            self.cert_file or "",
            self.key_file or "",
            self.ca_pem,
            self.cert_pem,
            self.key_pem,
            self.key_password,
        )


# A pooled client is keyed by its endpoint and the addresses it may connect to: a client never connects
# anywhere else, and a host whose approved answer changes gets a client of its own.
_PinnedEndpoint = tuple[HttpEndpoint, tuple[str, ...]]


class HttpClients:
    """The process-wide pool of HTTP clients, shared by all adapters.

    `resolve` (the engine's egress hook) gives the addresses of a request's host; the request goes to
    those addresses only (see adapters/resolve.py).
    """

    def __init__(self, resolve: Resolve = system_resolve) -> None:
        self.resolve = resolve
        self.pool: ClientPool[_PinnedEndpoint, aiohttp.ClientSession] = ClientPool("http", self._create, self._close)

    async def _session(self, url: str, endpoint: HttpEndpoint) -> aiohttp.ClientSession:
        # `import yarl`, not `from yarl import URL`: a from-import of a package runs importlib's
        # _handle_fromlist on every call, which was ~3% of the scaler's samples at cluster scale.
        import yarl  # what aiohttp itself parses the request URL with, so the same host

        try:
            parsed = yarl.URL(url)
        except (TypeError, ValueError):
            parsed = yarl.URL()
        host, port = parsed.raw_host, parsed.port
        if not host or port is None:
            raise SourceRejectedQuery(f"the request to {endpoint.origin} cannot be sent: its URL is not valid")
        return await self.pool.get((endpoint, await self.resolve(host, port)))

    async def _create(self, key: _PinnedEndpoint) -> aiohttp.ClientSession:
        import aiohttp

        from .http_resolver import PinnedResolver

        endpoint, addresses = key
        verify = await _tls_verification(endpoint)
        # Few connections, all kept alive: requests beyond them wait in the connector's queue. Reopening
        # TCP (and TLS) connections after every burst showed in profiles at 10,000 ScaledObjects.
        connector = aiohttp.TCPConnector(
            ssl=verify,
            limit=_MAX_CONNECTIONS,
            keepalive_timeout=60,
            resolver=PinnedResolver(urlsplit(endpoint.origin).hostname or "", addresses),
            use_dns_cache=False,  # nothing to cache: the resolver answers from its approved addresses
        )
        return aiohttp.ClientSession(
            connector=connector,
            # Environment proxies would send in-cluster traffic to a corporate proxy: opt-in only.
            trust_env=False,
            # Triggers share a session per endpoint: a cookie one trigger's source set must not ride along
            # with another trigger's credentials.
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"User-Agent": _USER_AGENT},
        )

    @staticmethod
    async def _close(client: aiohttp.ClientSession) -> None:
        await client.close()

    async def get_json(
        self,
        url: str,
        *,
        endpoint: HttpEndpoint,
        source: str,
        timeout: float,
        params: list[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        method: str = "GET",
        data: Mapping[str, str] | None = None,
        max_bytes: int = MAX_RESPONSE_BYTES,
    ) -> Any:
        """GET (or POST a form) and decode JSON. `source` names the thing in error messages, without secrets.

        A body longer than `max_bytes` is refused (SourceUnavailable naming the limit) before it is parsed.
        """
        import aiohttp

        session = await self._session(url, endpoint)
        request_headers = dict(headers or {})
        if auth is not None:
            request_headers["Authorization"] = basic_authorization(*auth)
        try:
            async with session.request(
                method,
                url,
                params=params or None,
                headers=request_headers,
                data=dict(data) if data is not None else None,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as response:
                status = response.status
                body = await _read_limited(response, source, max_bytes)
        except TimeoutError:  # aiohttp's own timeouts are TimeoutError subclasses too
            raise SourceTimeout(f"{source} did not answer within {timeout:g}s") from None
        except aiohttp.InvalidURL:
            # Models validate their URLs, this is the net for the ones they miss.
            raise SourceRejectedQuery(f"the request to {source} cannot be sent: its URL is not valid") from None
        except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
            raise SourceUnavailable(f"TLS with {source} failed: {_describe_tls_error(exc)}") from None
        except aiohttp.ClientError as exc:
            raise SourceUnavailable(f"cannot reach {source}: {_describe_transport_error(exc)}") from None
        except (UnicodeError, ValueError):
            # Raised while the request is built (a header or form value that cannot be encoded, a header
            # with a line break): nothing was sent.
            raise SourceRejectedQuery(
                f"the request to {source} cannot be sent: a header or parameter cannot be encoded"
            ) from None
        raise_for_status(status, body, source)
        try:
            return json.loads(body)
        # RecursionError: "[[[[..." bodies; ValueError: also an integer longer than Python's 4,300 digits.
        except (ValueError, RecursionError):
            raise SourceUnavailable(f"{source} answered HTTP {status} with a body that is not JSON") from None


def basic_authorization(username: str, password: str) -> str:
    """The Basic credentials header, UTF-8 encoded (as RabbitMQ and Prometheus' web config expect)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


async def _read_limited(response: aiohttp.ClientResponse, source: str, max_bytes: int) -> bytes:
    limit = f"{describe_size(max_bytes)} limit"
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        raise SourceUnavailable(f"{source} answered with {declared} bytes, more than the {limit}")
    chunks: list[bytes] = []
    size = 0
    # StreamReader.read(n) returns what has arrived (up to n), so read until the end or past the limit.
    while chunk := await response.content.read(max_bytes + 1 - size):
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            raise SourceUnavailable(f"{source} answered with more than the {limit}")
    return b"".join(chunks)


def describe_size(size: int) -> str:
    """`16 MiB`, `512 KiB`, `100 bytes`: limits as people write them."""
    for unit, scale in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} bytes"


async def _tls_verification(endpoint: HttpEndpoint) -> ssl.SSLContext | bool:
    # True/False need no context of ours: aiohttp's default verifies with the system store, False skips it.
    has_ca = endpoint.ca_file or endpoint.ca_pem
    if not (endpoint.cert_file or endpoint.cert_pem or (endpoint.verify and has_ca)):
        return endpoint.verify
    return await client_tls_context(endpoint.tls_files(), verify=endpoint.verify)


def raise_for_status(status: int, body: bytes, source: str) -> None:
    if status < 400:
        return
    detail = _error_detail(body)
    error: type[AdapterError]
    if status == 401:
        error = SourceUnauthenticated
    elif status == 403:
        error = SourcePermissionDenied
    elif status == 404:
        error = SourceNotFound
    elif status in (400, 422):
        error = SourceRejectedQuery
    elif status == 429 or status >= 500:
        error = SourceUnavailable
    else:
        error = SourceRejectedQuery
    raise error(f"{source} answered HTTP {status}{': ' + detail if detail else ''}")


def _error_detail(body: bytes) -> str:
    try:
        decoded = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return ""
    if isinstance(decoded, dict):
        for key in ("error", "reason", "message"):
            value = decoded.get(key)
            if isinstance(value, str):
                return value[:_MAX_ERROR_BODY]
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return str(value["message"])[:_MAX_ERROR_BODY]
    return ""


def _describe_tls_error(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    inner = getattr(exc, "os_error", None) or getattr(exc, "certificate_error", None)
    if inner is not None:
        reason = getattr(inner, "reason", None) or getattr(inner, "verify_message", None) or reason
    return strip_userinfo(str(reason)) if reason else type(exc).__name__


def _describe_transport_error(exc: aiohttp.ClientError) -> str:
    # Keep the class and a cleaned text: some messages carry the request URL, and with it any userinfo.
    text = strip_userinfo(str(exc)) if str(exc) else ""
    return f"{type(exc).__name__}{': ' + text[:200] if text else ''}"
