"""HTTP plumbing shared by every adapter that speaks HTTP (Prometheus, RabbitMQ management, Cloud Monitoring).

One httpx.AsyncClient (one connection pool) per endpoint and TLS settings for the whole process; errors
become the adapter errors the engine maps to gRPC codes. Adapters say what to ask, never how to connect.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import ssl
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from .errors import (
    AdapterError,
    SourceNotFound,
    SourcePermissionDenied,
    SourcePrecondition,
    SourceRejectedQuery,
    SourceTimeout,
    SourceUnauthenticated,
    SourceUnavailable,
)
from .pool import ClientPool
from .redaction import strip_userinfo

_MAX_ERROR_BODY = 300
_MAX_TLS_FILE = 1024 * 1024
_MAX_CONNECTIONS = 8


@dataclass(frozen=True, slots=True)
class HttpEndpoint:
    """What a pooled client is keyed by: origin and TLS settings (never the credentials: they go per request)."""

    origin: str
    verify: bool = True
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @classmethod
    def for_url(
        cls,
        url: str,
        *,
        verify: bool = True,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> HttpEndpoint:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        return cls(f"{parts.scheme}://{host}{port}", verify, ca_file, cert_file, key_file)


class HttpClients:
    """The process-wide pool of HTTP clients, shared by all adapters."""

    def __init__(self) -> None:
        self.pool: ClientPool[HttpEndpoint, httpx.AsyncClient] = ClientPool("http", self._create, self._close)
        # Requests beyond the pool's connections wait here, not in httpcore: its pool re-scans every queued
        # request against every connection on each event, which collapsed the event loop under a burst of
        # hundreds of queries to one endpoint (py-spy: 40% of the scaler's time in that scan).
        self._slots: dict[HttpEndpoint, asyncio.Semaphore] = {}

    async def _create(self, endpoint: HttpEndpoint) -> httpx.AsyncClient:
        try:
            verify = _tls_verification(endpoint)
        except OSError as exc:  # ssl.SSLError is an OSError too
            reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
            raise SourcePrecondition(f"cannot use the TLS files given for {endpoint.origin}: {reason}") from None
        return httpx.AsyncClient(
            verify=verify,
            # Environment proxies would send in-cluster traffic to a corporate proxy: opt-in only.
            trust_env=False,
            # Few connections, all kept alive: httpcore checks every pooled connection for expiry on each
            # request (a syscall each), and closing the ones above the keep-alive limit after a burst
            # reopened TCP connections on the next one (both in py-spy profiles at 10k ScaledObjects).
            limits=httpx.Limits(
                max_connections=_MAX_CONNECTIONS, max_keepalive_connections=_MAX_CONNECTIONS, keepalive_expiry=60
            ),
            follow_redirects=False,
        )

    @staticmethod
    async def _close(client: httpx.AsyncClient) -> None:
        await client.aclose()

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
    ) -> Any:
        """GET (or POST a form) and decode JSON. `source` names the thing in error messages, without secrets."""
        client = await self.pool.get(endpoint)
        slots = self._slots.get(endpoint)
        if slots is None:
            slots = self._slots[endpoint] = asyncio.Semaphore(_MAX_CONNECTIONS)
        try:
            async with slots:
                response = await client.request(
                    method,
                    url,
                    params=tuple(params or ()),
                    headers=headers,
                    auth=auth,
                    data=data,
                    timeout=timeout,
                )
        except httpx.TimeoutException:
            raise SourceTimeout(f"{source} did not answer within {timeout:g}s") from None
        except UnicodeError:
            raise SourceRejectedQuery(f"the request to {source} cannot be sent: a header is not ASCII") from None
        except httpx.InvalidURL:
            # Not an httpx.HTTPError: models validate their URLs, this is the net for the ones they miss.
            raise SourceRejectedQuery(f"the request to {source} cannot be sent: its URL is not valid") from None
        except httpx.HTTPError as exc:
            raise SourceUnavailable(f"cannot reach {source}: {_describe_transport_error(exc)}") from None
        except ssl.SSLError as exc:
            raise SourceUnavailable(f"TLS with {source} failed: {exc.reason or type(exc).__name__}") from None
        raise_for_status(response, source)
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # RecursionError: "[[[[..." bodies
            raise SourceUnavailable(
                f"{source} answered HTTP {response.status_code} with a body that is not JSON"
            ) from None


def _tls_verification(endpoint: HttpEndpoint) -> ssl.SSLContext | bool:
    for path in (endpoint.ca_file, endpoint.cert_file, endpoint.key_file):
        if path:
            _check_regular_file(path)
    if endpoint.verify and (endpoint.ca_file or endpoint.cert_file):
        ctx = ssl.create_default_context(cafile=endpoint.ca_file)
        if endpoint.cert_file:
            ctx.load_cert_chain(endpoint.cert_file, endpoint.key_file)
        return ctx
    if not endpoint.verify and endpoint.cert_file:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.load_cert_chain(endpoint.cert_file, endpoint.key_file)
        return ctx
    return endpoint.verify


def _check_regular_file(path: str) -> None:
    # Paths come from trigger metadata: a FIFO or device would block the event loop while OpenSSL reads it.
    status = os.stat(path)
    if not stat.S_ISREG(status.st_mode):
        raise OSError(errno.EINVAL, f"{path} is not a regular file")
    if status.st_size > _MAX_TLS_FILE:
        raise OSError(errno.EFBIG, f"{path} is larger than {_MAX_TLS_FILE // 1024} KiB")


def raise_for_status(response: httpx.Response, source: str) -> None:
    code = response.status_code
    if code < 400:
        return
    detail = _error_detail(response)
    error: type[AdapterError]
    if code == 401:
        error = SourceUnauthenticated
    elif code == 403:
        error = SourcePermissionDenied
    elif code == 404:
        error = SourceNotFound
    elif code in (400, 422):
        error = SourceRejectedQuery
    elif code == 429 or code >= 500:
        error = SourceUnavailable
    else:
        error = SourceRejectedQuery
    raise error(f"{source} answered HTTP {code}{': ' + detail if detail else ''}")


def _error_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return ""
    if isinstance(body, dict):
        for key in ("error", "reason", "message"):
            value = body.get(key)
            if isinstance(value, str):
                return value[:_MAX_ERROR_BODY]
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return str(value["message"])[:_MAX_ERROR_BODY]
    return ""


def _describe_transport_error(exc: httpx.HTTPError) -> str:
    # httpx messages can carry the full URL (with userinfo) on some paths; keep the class and a cleaned text.
    text = strip_userinfo(str(exc)) if str(exc) else ""
    return f"{type(exc).__name__}{': ' + text[:200] if text else ''}"
