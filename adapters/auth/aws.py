"""AWS SigV4 for Amazon Managed Service for Prometheus (service `aps`) and any SigV4 source.

Credentials, in the order of the AWS SDKs' default chain (the pod's own, like KEDA's `aws` pod identity):
static keys from the trigger's named connection; AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
AWS_SESSION_TOKEN; EKS IRSA (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE, exchanged at STS by
AssumeRoleWithWebIdentity); EKS Pod Identity (AWS_CONTAINER_CREDENTIALS_FULL_URI +
AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE). Temporary credentials are cached and refreshed like tokens.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..errors import SourceUnauthenticated, SourceUnavailable
from ..http import HttpClients
from ..sources import credentials_identity
from .files import read_token_file
from .request import AuthProvider, OutgoingRequest, register_secrets
from .sigv4 import AwsCredentials, sign
from .token_endpoint import describe_endpoint, post_token_request
from .tokens import TOKENS, Token, TokenCache

AMP_SERVICE = "aps"


class AwsSigV4(AuthProvider):
    """Signs every request; must be the last provider applied (it signs the headers already there)."""

    name = "AWS SigV4"

    def __init__(
        self,
        region: str,
        *,
        service: str = AMP_SERVICE,
        static: AwsCredentials | None = None,
        environ: Mapping[str, str] | None = None,
        cache: TokenCache = TOKENS,
    ) -> None:
        self.region = region
        self.service = service
        self._env = dict(os.environ if environ is None else environ)
        self._cache = cache
        self._static = static or _from_environment(self._env)
        self.ambient = static is None
        if self._static is not None:
            register_secrets(self._static.secret_access_key, self._static.session_token)
            self._source = "static keys"
            self._identity = credentials_identity("aws", self._static.access_key_id, self._static.secret_access_key)
        elif self._env.get("AWS_ROLE_ARN") and self._env.get("AWS_WEB_IDENTITY_TOKEN_FILE"):
            self._source = "STS AssumeRoleWithWebIdentity"
            self._identity = credentials_identity("aws-irsa", self._env["AWS_ROLE_ARN"], self._sts_url())
        elif self._env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"):
            self._source = "the EKS Pod Identity agent"
            self._identity = credentials_identity("aws-pod-identity", self._env["AWS_CONTAINER_CREDENTIALS_FULL_URI"])
        else:
            raise SourceUnauthenticated(
                "AWS SigV4: no credentials in the scaler's environment (AWS_ACCESS_KEY_ID, AWS_ROLE_ARN with "
                "AWS_WEB_IDENTITY_TOKEN_FILE, or AWS_CONTAINER_CREDENTIALS_FULL_URI)"
            )

    @property
    def identity(self) -> str:
        return self._identity

    async def credentials(self, http: HttpClients, *, timeout: float) -> AwsCredentials:
        if self._static is not None:
            return self._static
        return await self._cache.get(self._identity, lambda: self._fetch(http, timeout), name=self.name)

    async def apply(self, request: OutgoingRequest, http: HttpClients, *, timeout: float) -> OutgoingRequest:
        credentials = await self.credentials(http, timeout=timeout)
        return sign(request, credentials, region=self.region, service=self.service)

    def _sts_url(self) -> str:
        custom = self._env.get("AWS_ENDPOINT_URL_STS") or self._env.get("AWS_ENDPOINT_URL")
        region = self._env.get("AWS_REGION") or self._env.get("AWS_DEFAULT_REGION") or self.region
        return (custom or f"https://sts.{region}.amazonaws.com").rstrip("/") + "/"

    async def _fetch(self, http: HttpClients, timeout: float) -> Token[AwsCredentials]:
        if self._source.startswith("STS"):
            return await self._assume_role_with_web_identity(http, timeout)
        return await self._pod_identity(http, timeout)

    async def _assume_role_with_web_identity(self, http: HttpClients, timeout: float) -> Token[AwsCredentials]:
        web_token = await read_token_file(self._env["AWS_WEB_IDENTITY_TOKEN_FILE"], "AWS_WEB_IDENTITY_TOKEN_FILE")
        register_secrets(web_token)
        url = self._sts_url()
        form = {
            "Action": "AssumeRoleWithWebIdentity",
            "Version": "2011-06-15",
            "RoleArn": self._env["AWS_ROLE_ARN"],
            "RoleSessionName": self._env.get("AWS_ROLE_SESSION_NAME") or f"keda-queue-scaler-{int(time.time())}",
            "WebIdentityToken": web_token,
        }
        # AWS query APIs answer JSON when asked to (Accept: application/json), which the HTTP client decodes.
        body = await post_token_request(
            http,
            url,
            form,
            timeout=timeout,
            provider="AWS STS",
            refused_what="the web identity token (AssumeRoleWithWebIdentity)",
        )
        found = _dig(body, "AssumeRoleWithWebIdentityResponse", "AssumeRoleWithWebIdentityResult", "Credentials")
        return self._credentials_token(found, "SessionToken", f"AWS STS at {describe_endpoint(url)}")

    async def _pod_identity(self, http: HttpClients, timeout: float) -> Token[AwsCredentials]:
        url = self._env["AWS_CONTAINER_CREDENTIALS_FULL_URI"]
        token_file = self._env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
        authorization = (
            await read_token_file(token_file, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
            if token_file
            else self._env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN", "")
        )
        register_secrets(authorization)
        body = await post_token_request(
            http,
            url,
            {},
            timeout=timeout,
            method="GET",
            provider="EKS Pod Identity agent",
            refused_what="the pod's authorization token",
            headers={"Authorization": authorization} if authorization else None,
        )
        return self._credentials_token(body, "Token", f"EKS Pod Identity agent at {describe_endpoint(url)}")

    def _credentials_token(self, found: Any, token_key: str, source: str) -> Token[AwsCredentials]:
        keys = ("AccessKeyId", "SecretAccessKey")
        if not isinstance(found, dict) or not all(isinstance(found.get(k), str) for k in keys):
            raise SourceUnavailable(f"{source} answered without credentials")
        credentials = AwsCredentials(found["AccessKeyId"], found["SecretAccessKey"], str(found.get(token_key) or ""))
        register_secrets(credentials.secret_access_key, credentials.session_token)
        return Token.lasting(credentials, _seconds_left(found.get("Expiration")))


def _from_environment(env: Mapping[str, str]) -> AwsCredentials | None:
    key, secret = env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", "")
    return AwsCredentials(key, secret, env.get("AWS_SESSION_TOKEN", "")) if key and secret else None


def _dig(body: Any, *keys: str) -> Any:
    for key in keys:
        body = body.get(key) if isinstance(body, dict) else None
    return body


def _seconds_left(expiration: Any) -> float:
    """Expiration as epoch seconds (STS' JSON) or ISO 8601 (the container endpoint); 15 min if absent."""
    if isinstance(expiration, (int, float)) and not isinstance(expiration, bool):
        return float(expiration) - time.time()
    if isinstance(expiration, str):
        try:
            return datetime.fromisoformat(expiration.replace("Z", "+00:00")).timestamp() - time.time()
        except ValueError:
            pass
    return 900.0
