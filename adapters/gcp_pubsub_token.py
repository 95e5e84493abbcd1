"""The HTTP transport google-auth uses to fetch a token for an inline key: to the approved addresses only.

An inline service account key (`credentials`, KEDA's `credentialsFromEnv`) names its own `token_uri`, so
a ScaledObject chooses where google-auth posts the signed assertion. The egress check approves that host's
addresses; this transport connects to those addresses (TLS still verified against, and SNI set to, the
host name) instead of letting `requests` look the name up again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import certifi
import google.auth.exceptions
import google.auth.transport
import urllib3

from .resolve import idna_host

_DEFAULT_TIMEOUT = 30.0


class _Response(google.auth.transport.Response):
    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._status = response.status
        self._headers = dict(response.headers)
        self._data = response.data

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers

    @property
    def data(self) -> bytes:
        return self._data


class PinnedTokenRequest(google.auth.transport.Request):
    """A google-auth transport for one host, connecting to `addresses` in order; called on a worker thread."""

    def __init__(self, host: str, addresses: tuple[str, ...]) -> None:
        self.host = idna_host(host)
        self.addresses = addresses

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> google.auth.transport.Response:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or idna_host(parts.hostname or "") != self.host:
            raise google.auth.exceptions.TransportError(  # type: ignore[no-untyped-call]
                f"this token transport serves {self.host} only"
            )
        port = parts.port or (443 if parts.scheme == "https" else 80)
        target = urlunsplit(("", "", parts.path or "/", parts.query, ""))
        request_headers = {**(headers or {}), "Host": parts.netloc.rpartition("@")[2]}
        error: Exception | None = None
        for address in self.addresses:
            pool: urllib3.HTTPConnectionPool
            if parts.scheme == "https":
                pool = urllib3.HTTPSConnectionPool(
                    address,
                    port,
                    server_hostname=self.host,
                    assert_hostname=self.host,
                    cert_reqs="CERT_REQUIRED",
                    ca_certs=certifi.where(),  # the CAs `requests` (google-auth's default transport) trusts
                )
            else:
                pool = urllib3.HTTPConnectionPool(address, port)
            try:
                with pool:
                    response = pool.urlopen(
                        method,
                        target,
                        body=body,
                        headers=request_headers,
                        timeout=timeout or _DEFAULT_TIMEOUT,
                        retries=False,
                        redirect=False,
                    )
                    return _Response(response)
            except urllib3.exceptions.HTTPError as exc:
                error = exc
        raise google.auth.exceptions.TransportError(  # type: ignore[no-untyped-call]
            f"cannot reach {self.host}: {type(error).__name__}"
        )
