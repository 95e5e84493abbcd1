"""Token endpoints are reached through the project's HTTP client: the same pooling, response cap,
timeouts and error mapping as any source; what they refuse becomes UNAUTHENTICATED naming the provider."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ..errors import AdapterError, SourcePermissionDenied, SourceRejectedQuery, SourceUnauthenticated, SourceUnavailable
from ..http import HttpClients, HttpEndpoint
from ..redaction import SECRETS, strip_userinfo


def describe_endpoint(url: str) -> str:
    """scheme://host[:port]/path: no userinfo, and no query (a token URL's query may hold a key)."""
    parts = urlsplit(strip_userinfo(url))
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def refused(exc: AdapterError) -> bool:
    return isinstance(exc, SourceUnauthenticated)


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_https(url: str, key: str, provider: str) -> None:
    """Tokens and the assertions that buy them only over HTTPS; plain HTTP only to a loopback IP (a
    sidecar or a test stand-in: the bytes never leave the pod)."""
    scheme = urlsplit(url).scheme
    if scheme == "https" or (scheme == "http" and is_loopback(url)):
        return
    from ..errors import InvalidMetadata

    raise InvalidMetadata(key, f"{provider} is reached only over https:// (plain http only to a loopback IP)")


async def post_token_request(
    http: HttpClients,
    url: str,
    form: Mapping[str, str],
    *,
    timeout: float,
    provider: str,
    endpoint: HttpEndpoint | None = None,
    refused_what: str,
    auth: tuple[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    method: str = "POST",
) -> dict[str, Any]:
    """POST a form (or GET with `method`) and return the JSON object; 400/401/403 become UNAUTHENTICATED."""
    source = f"{provider} at {describe_endpoint(url)}"
    try:
        body = await http.get_json(
            url,
            endpoint=endpoint or HttpEndpoint.for_url(url),
            source=source,
            timeout=timeout,
            method=method,
            data=form if method == "POST" else None,
            auth=auth,
            headers={"Accept": "application/json", **(headers or {})},
        )
    except (SourceUnauthenticated, SourcePermissionDenied, SourceRejectedQuery) as exc:
        # A token endpoint answers 400 invalid_client / invalid_grant as often as 401: all mean "refused".
        _, _, status = exc.message.partition(" answered ")
        message = f"{provider} refused {refused_what} ({status or 'refused'})"
        raise SourceUnauthenticated(SECRETS.redact(message)) from None
    if not isinstance(body, dict):
        raise SourceUnavailable(f"{source} did not answer with a JSON object")
    return body
