"""Google credentials for the Pub/Sub adapter, on the shared Google providers of adapters/auth.

A service account key (inline `credentials` or a `credentialsFile` document) and ADC get their tokens from
adapters/auth: GoogleServiceAccount posts the signed assertion through the project's HTTP client, whose
resolve hook connects an inline key's `token_uri` to the addresses the egress check approved (what
PinnedTokenRequest did for google-auth); GoogleDefaultCredentials runs google-auth's ADC on a thread. Tokens
are cached per identity in the shared cache, so Pub/Sub and Prometheus triggers with the same key share one.
Other documents (external_account, authorized_user) stay on google-auth's own refresh, on a thread, with the
pinned transport of gcp_pubsub_token for inline ones. The google-auth object is still loaded (on a thread)
for what only it knows: a document's project.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .api import AdapterError, HttpClients, Resolve, SourceUnauthenticated, SourceUnavailable
from .auth import GoogleDefaultCredentials, GoogleServiceAccount
from .auth.bearer import BearerTokenProvider
from .auth.google import CLOUD_PLATFORM
from .files import MAX_CREDENTIALS_BYTES, read_file
from .gcp_pubsub_metadata import inline_token_uri

SCOPES = (CLOUD_PLATFORM,)
TOKEN_TIMEOUT = 10.0  # a token request's own bound; the reading's deadline still applies around it


@dataclass(frozen=True)
class CredentialsSource:
    """Where credentials come from: inline JSON (credentialsFromEnv), a file, or ADC when both are empty."""

    info: str = field(default="", repr=False)
    file: str = ""

    def describe(self) -> str:
        if self.info:
            return "the `credentials` JSON"
        if self.file:
            # Not the path: it may be a named connection's, which the tenant using it should not learn.
            return "the `credentialsFile` document"
        return "Application Default Credentials"


class GoogleCredentials:
    """One google-auth credentials object and its token, refreshed on a thread when it expires."""

    def __init__(
        self,
        source: CredentialsSource,
        credentials: Any,
        resolve: Resolve | None = None,
        *,
        provider: BearerTokenProvider | None = None,
        http: HttpClients | None = None,
    ) -> None:
        self.source = source
        self.credentials = credentials
        self.resolve = resolve
        self.provider = provider
        self.http = http
        self._lock = asyncio.Lock()

    @classmethod
    async def load(
        cls, source: CredentialsSource, resolve: Resolve | None = None, http: HttpClients | None = None
    ) -> GoogleCredentials:
        # The file is read on the file executor (regular files only, capped); google-auth only parses it.
        document = await read_file("credentialsFile", source.file, MAX_CREDENTIALS_BYTES) if source.file else None
        credentials = await asyncio.to_thread(_load, source, document)
        provider = _shared_provider(source, document) if http is not None else None
        return cls(source, credentials, resolve, provider=provider, http=http)

    async def token(self, timeout: float = TOKEN_TIMEOUT) -> str:
        if self.provider is not None and self.http is not None:
            return await self.provider.token(self.http, timeout=timeout)
        # One refresh at a time per identity; callers arriving meanwhile reuse its token.
        async with self._lock:
            if not self.credentials.valid:
                pinned = await self._token_addresses()
                await asyncio.to_thread(self._refresh, pinned)
            return str(self.credentials.token)

    async def _token_addresses(self) -> tuple[str, tuple[str, ...]] | None:
        """An inline key's token host and the addresses the resolve hook approves for it (None: not inline).

        The key's token_uri is a ScaledObject's choice: the token request goes where the egress check
        approved. Files and ADC are the operator's and keep google-auth's own transport (a GCE metadata
        server, say).
        """
        token_uri = inline_token_uri(self.source.info)
        if self.resolve is None or not token_uri:
            return None
        parts = urlsplit(token_uri)
        if not parts.hostname:
            return None
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return parts.hostname, await self.resolve(parts.hostname, port)

    def _refresh(self, pinned: tuple[str, tuple[str, ...]] | None) -> None:
        import google.auth.exceptions  # deferred: google-auth is slow to import, and only Google endpoints need it
        import google.auth.transport.requests

        from .gcp_pubsub_token import PinnedTokenRequest

        request = google.auth.transport.requests.Request() if pinned is None else PinnedTokenRequest(*pinned)
        try:
            self.credentials.refresh(request)
        except google.auth.exceptions.RefreshError as exc:
            raise SourceUnauthenticated(
                f"Google refused to issue a token for {self.source.describe()}: {_first_line(exc)}"
            ) from None
        except google.auth.exceptions.TransportError as exc:
            raise SourceUnavailable(
                f"cannot reach Google's token service for {self.source.describe()}: {_first_line(exc)}"
            ) from None
        except google.auth.exceptions.GoogleAuthError as exc:
            # e.g. OAuthError: a token exchange (external_account in credentialsFile or ADC) refused.
            raise SourceUnauthenticated(
                f"Google refused to issue a token for {self.source.describe()}: {type(exc).__name__}"
            ) from None


def _shared_provider(source: CredentialsSource, document: bytes | None) -> BearerTokenProvider | None:
    """The adapters/auth provider for a service account key or ADC; None for documents only google-auth knows."""
    text = source.info or (document.decode("utf-8", "replace") if document is not None else "")
    if not text:
        return GoogleDefaultCredentials(scopes=SCOPES)
    try:
        kind = json.loads(text).get("type")
    except (ValueError, RecursionError, AttributeError):
        return None  # _load has already refused it
    if kind != "service_account":
        return None
    return GoogleServiceAccount(text, scopes=SCOPES, key="credentials" if source.info else "credentialsFile")


def _load(source: CredentialsSource, document: bytes | None) -> Any:
    import google.auth  # deferred: see _refresh
    import google.auth.exceptions

    try:
        text = source.info or document
        if text:
            try:
                info = json.loads(text)
            except (ValueError, RecursionError):  # ValueError: not JSON, or not UTF-8
                # Never echo the content: it is a private key.
                raise SourceUnauthenticated(f"{source.describe()} is not a JSON credentials document") from None
            if not isinstance(info, dict):
                raise SourceUnauthenticated(f"{source.describe()} is not a JSON credentials document")
            credentials, _ = google.auth.load_credentials_from_dict(info, scopes=SCOPES)  # type: ignore[no-untyped-call]
        else:
            credentials, _ = google.auth.default(scopes=SCOPES)
    except google.auth.exceptions.DefaultCredentialsError as exc:
        detail = "" if source.info else f": {_first_line(exc)}"
        raise SourceUnauthenticated(f"cannot load Google credentials from {source.describe()}{detail}") from None
    except AdapterError:
        raise
    except google.auth.exceptions.TransportError:
        raise SourceUnavailable(f"cannot reach Google's token service for {source.describe()}") from None
    except google.auth.exceptions.GoogleAuthError as exc:
        # Loading can already exchange tokens (an external_account file finds its project that way).
        raise SourceUnauthenticated(
            f"cannot load Google credentials from {source.describe()}: {type(exc).__name__}"
        ) from None
    except (OSError, ValueError) as exc:
        raise SourceUnauthenticated(
            f"cannot load Google credentials from {source.describe()}: {type(exc).__name__}"
        ) from None
    return credentials


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
