"""Google credentials: a service account key (the trigger's named connection) or the pod's own ADC.

A service account key is exchanged here through the project's HTTP client (JWT bearer grant, RFC 7523):
the key's `token_uri` is the tenant's choice, so it gets the egress check, the response cap and HTTPS.
google-auth signs the assertion. Ambient ADC (GKE Workload Identity, GOOGLE_APPLICATION_CREDENTIALS) is the
operator's: google-auth loads and refreshes it on a worker thread, since it is synchronous.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import time
from typing import Any

from ..errors import InvalidMetadata, SourceUnauthenticated, SourceUnavailable
from ..http import HttpClients
from ..sources import credentials_identity
from .bearer import BearerTokenProvider
from .oauth2 import expires_in
from .request import register_secrets
from .token_endpoint import describe_endpoint, post_token_request, require_https
from .tokens import TOKENS, Token, TokenCache

MONITORING_READ = "https://www.googleapis.com/auth/monitoring.read"  # what KEDA asks for Managed Prometheus
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_ASSERTION_LIFETIME = 3600
# Google's documented audience of a token request assertion, whatever the key's token_uri (google-auth agrees).
_AUDIENCE = "https://oauth2.googleapis.com/token"


class GoogleServiceAccount(BearerTokenProvider):
    name = "Google token endpoint"

    def __init__(
        self,
        key_json: str,
        *,
        scopes: tuple[str, ...] = (MONITORING_READ,),
        key: str = "credentials",
        cache: TokenCache = TOKENS,
    ) -> None:
        try:
            info = json.loads(key_json)
        except (json.JSONDecodeError, RecursionError):
            raise InvalidMetadata(key, "is not a JSON service account key") from None  # never echo: a private key
        if not isinstance(info, dict) or info.get("type") != "service_account":
            raise InvalidMetadata(key, 'must be a service account key ("type": "service_account")')
        for field in ("client_email", "private_key", "token_uri"):
            if not isinstance(info.get(field), str) or not info[field]:
                raise InvalidMetadata(key, f"has no `{field}`")
        self._info = info
        self.token_uri: str = info["token_uri"]
        self._key = key
        require_https(self.token_uri, key, "a Google token endpoint (`token_uri`)")
        self.project_id = str(info.get("project_id") or "")
        self.scopes = scopes
        self._cache = cache
        self._identity = credentials_identity("google-sa", info["client_email"], info["private_key"], " ".join(scopes))
        register_secrets(info["private_key"])

    def addresses(self) -> list[tuple[str, str]]:
        return [(self._key, self.token_uri)]

    async def _fetch(self, http: HttpClients, timeout: float) -> Token[str]:
        assertion = await asyncio.to_thread(self._assertion)
        body = await post_token_request(
            http,
            self.token_uri,
            {"grant_type": _JWT_BEARER, "assertion": assertion},
            timeout=timeout,
            provider=self.name,
            refused_what=f"the service account key of {self._info['client_email']}",
        )
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            where = describe_endpoint(self.token_uri)
            raise SourceUnavailable(f"{self.name} at {where} answered without an access_token")
        register_secrets(access)
        return Token.lasting(access, expires_in(body, 3600.0))

    def _assertion(self) -> str:
        import google.auth.crypt  # deferred: google-auth is slow to import and only Google sources need it
        import google.auth.jwt

        try:
            signer = google.auth.crypt.RSASigner.from_service_account_info(self._info)  # type: ignore[no-untyped-call]
        except (ValueError, TypeError):
            raise SourceUnauthenticated(f"the {self._key} private key cannot be loaded") from None
        now = int(time.time())
        payload = {
            "iss": self._info["client_email"],
            "scope": " ".join(self.scopes),
            "aud": _AUDIENCE,
            "iat": now,
            "exp": now + _ASSERTION_LIFETIME,
        }
        encoded: bytes = google.auth.jwt.encode(signer, payload)  # type: ignore[no-untyped-call]
        return encoded.decode()


class GoogleDefaultCredentials(BearerTokenProvider):
    """Application Default Credentials of the scaler pod (GKE Workload Identity's metadata server, or the
    file GOOGLE_APPLICATION_CREDENTIALS names); google-auth decides the flow, on a thread."""

    name = "Google Application Default Credentials"
    ambient = True

    def __init__(self, *, scopes: tuple[str, ...] = (MONITORING_READ,), cache: TokenCache = TOKENS) -> None:
        self.scopes = scopes
        self._cache = cache
        self._credentials: Any = None
        self._identity = credentials_identity("google-adc", " ".join(scopes))

    async def _fetch(self, http: HttpClients, timeout: float) -> Token[str]:
        # google-auth's own transport, on a thread: the pod's identity, at addresses the operator set up.
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._refresh), timeout)
        except TimeoutError:
            raise SourceUnavailable(f"{self.name}: no token within {timeout:g}s") from None

    def _refresh(self) -> Token[str]:
        import google.auth
        import google.auth.exceptions
        import google.auth.transport.requests

        try:
            if self._credentials is None:
                self._credentials, _ = google.auth.default(scopes=list(self.scopes))
            self._credentials.refresh(google.auth.transport.requests.Request())
        except google.auth.exceptions.DefaultCredentialsError:
            raise SourceUnauthenticated(f"{self.name}: none found in the scaler pod") from None
        except google.auth.exceptions.TransportError:
            raise SourceUnavailable(f"{self.name}: cannot reach Google's token service") from None
        except google.auth.exceptions.GoogleAuthError as exc:
            reason = type(exc).__name__
            raise SourceUnauthenticated(f"{self.name}: Google refused to issue a token ({reason})") from None
        token = str(self._credentials.token)
        register_secrets(token)
        expiry = self._credentials.expiry  # google-auth keeps a naive UTC datetime, or None
        left = 3600.0 if expiry is None else calendar.timegm(expiry.utctimetuple()) - time.time()
        return Token.lasting(token, left)
