"""OAuth2 client credentials (RFC 6749 4.4), KEDA's `oauthTokenURI`, `clientID`, `clientSecret`, `scopes`,
`endpointParams`.

Client authentication as golang.org/x/oauth2 (which KEDA uses) auto-detects it: HTTP Basic first
(RFC 6749 2.3.1, the method servers must support), and if the endpoint refuses that, the credentials in
the form body; the style that worked is remembered per identity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import quote

from ..errors import AdapterError, SourceUnavailable
from ..http import HttpClients, HttpEndpoint
from ..sources import credentials_identity
from .bearer import BearerTokenProvider
from .request import register_secrets
from .token_endpoint import describe_endpoint, post_token_request, refused
from .tokens import TOKENS, Token, TokenCache

_DEFAULT_LIFETIME = 3600.0  # RFC 6749 makes expires_in optional; x/oauth2 then never refreshes, we do hourly


class OAuth2ClientCredentials(BearerTokenProvider):
    name = "OAuth2 token endpoint"

    def __init__(
        self,
        token_uri: str,
        client_id: str,
        client_secret: str,
        *,
        scopes: Sequence[str] = (),
        endpoint_params: Sequence[tuple[str, str]] = (),
        address_key: str = "oauthTokenURI",
        endpoint: HttpEndpoint | None = None,
        cache: TokenCache = TOKENS,
    ) -> None:
        self.token_uri = token_uri
        self._client_id = client_id
        self._client_secret = client_secret
        self._scopes = tuple(s.strip() for s in scopes if s.strip())
        self._params = tuple(endpoint_params)
        self._address_key = address_key
        self._endpoint = endpoint or HttpEndpoint.for_url(token_uri)
        self._cache = cache
        self._in_body = False
        # The secret is part of the identity (another secret is another token), but only as a digest.
        self._identity = credentials_identity(
            "oauth2", token_uri, client_id, client_secret, " ".join(self._scopes), repr(self._params)
        )
        register_secrets(client_secret)

    def addresses(self) -> list[tuple[str, str]]:
        return [(self._address_key, self.token_uri)]

    async def _fetch(self, http: HttpClients, timeout: float) -> Token[str]:
        form: dict[str, str] = {"grant_type": "client_credentials"}
        if self._scopes:
            form["scope"] = " ".join(self._scopes)
        for key, value in self._params:
            form.setdefault(key, value)
        if not self._in_body:
            try:
                return await self._post(http, timeout, form, basic=True)
            except AdapterError as exc:
                if not refused(exc):
                    raise
            # Refused with Basic: try the body once, and keep that style if it works.
            token = await self._post(
                http, timeout, {**form, "client_id": self._client_id, "client_secret": self._client_secret}, False
            )
            self._in_body = True
            return token
        return await self._post(
            http, timeout, {**form, "client_id": self._client_id, "client_secret": self._client_secret}, False
        )

    async def _post(self, http: HttpClients, timeout: float, form: Mapping[str, str], basic: bool) -> Token[str]:
        # RFC 6749 2.3.1: client id and secret are form-urlencoded before they go into the Basic header.
        auth = (quote(self._client_id, safe=""), quote(self._client_secret, safe="")) if basic else None
        body = await post_token_request(
            http,
            self.token_uri,
            form,
            endpoint=self._endpoint,
            timeout=timeout,
            provider=self.name,
            refused_what="the client credentials",
            auth=auth,
        )
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            where = describe_endpoint(self.token_uri)
            raise SourceUnavailable(f"{self.name} at {where} answered without an access_token")
        token_type = body.get("token_type")
        if isinstance(token_type, str) and token_type.lower() not in ("bearer", ""):
            raise SourceUnavailable(f"{self.name} issued a '{token_type[:20]}' token; only Bearer tokens can be sent")
        register_secrets(access)
        return Token.lasting(access, expires_in(body, _DEFAULT_LIFETIME))


def expires_in(body: Mapping[str, object], default: float) -> float:
    value = body.get("expires_in")
    try:
        seconds = float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else default
    except ValueError:
        return default
    return seconds if seconds > 0 else default
