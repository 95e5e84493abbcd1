"""AWS Signature Version 4, as the AWS General Reference describes it (a pure function of request,
credentials and time). Written here rather than taken from botocore: botocore is 32 MB installed and brings
its own HTTP stack and credential chain for one HMAC chain; the tests check these signatures with
botocore's own signer.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from .request import OutgoingRequest

ALGORITHM = "AWS4-HMAC-SHA256"


@dataclass(frozen=True, slots=True)
class AwsCredentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(default="", repr=False)


def _uri_encode(text: str) -> str:
    # RFC 3986 unreserved characters stay, everything else is %XX (space is %20, never '+').
    return quote(text, safe="-_.~")


def canonical_query(pairs: list[tuple[str, str]]) -> str:
    encoded = sorted((_uri_encode(k), _uri_encode(v)) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def sign(
    request: OutgoingRequest, credentials: AwsCredentials, *, region: str, service: str, now: datetime | None = None
) -> OutgoingRequest:
    """The request with `params` folded into its URL (encoded exactly as signed) and the SigV4 headers."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    parts = urlsplit(request.url)
    pairs = parse_qsl(parts.query, keep_blank_values=True) + list(request.params)
    query = canonical_query(pairs)
    # Sent as signed: the URL carries the canonical query, so no client re-encoding can change it.
    url = urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, ""))
    host = _host_header(parts.scheme, parts.hostname or "", parts.port)
    payload_hash = hashlib.sha256(request.body).hexdigest()
    signed = request.with_header("Host", host).with_header("X-Amz-Date", amz_date)
    signed = signed.with_header("X-Amz-Content-Sha256", payload_hash)
    if credentials.session_token:
        signed = signed.with_header("X-Amz-Security-Token", credentials.session_token)
    headers: dict[str, str] = {}
    for name, value in signed.headers:
        lowered = name.lower()
        if lowered in ("user-agent", "authorization", "expect"):
            continue  # proxies and clients rewrite these; signing them would break the signature
        folded = " ".join(value.split())
        headers[lowered] = f"{headers[lowered]},{folded}" if lowered in headers else folded
    signed_names = ";".join(sorted(headers))
    canonical_headers = "".join(f"{k}:{headers[k]}\n" for k in sorted(headers))
    # Non-S3 services sign the path URI-encoded once more than it is sent.
    canonical_path = quote(parts.path or "/", safe="/~")
    canonical_request = "\n".join(
        (request.method.upper(), canonical_path, query, canonical_headers, signed_names, payload_hash)
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join((ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()))
    key = _hmac(f"AWS4{credentials.secret_access_key}".encode(), day)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    authorization = (
        f"{ALGORITHM} Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={signed_names}, Signature={signature}"
    )
    return OutgoingRequest(
        request.method,
        url,
        (),
        (*((k, v) for k, v in signed.headers if k.lower() != "host"), ("Authorization", authorization)),
        request.body,
    )


def _host_header(scheme: str, hostname: str, port: int | None) -> str:
    # What the HTTP client will send as Host: default ports are left out.
    host = f"[{hostname}]" if ":" in hostname else hostname
    return host if port is None or (scheme, port) in (("http", 80), ("https", 443)) else f"{host}:{port}"


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()
