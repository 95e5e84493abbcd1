"""Providers whose credentials are fixed strings: basic, bearer, a custom header, an API key."""

from __future__ import annotations

from typing import Literal

from ..http import HttpClients, basic_authorization
from ..sources import credentials_identity
from .request import AuthProvider, OutgoingRequest, register_secrets

# KEDA's names when `keyParamName` is not given (metrics-api scaler, the one that implements apiKey).
DEFAULT_API_KEY_HEADER = "X-API-KEY"
DEFAULT_API_KEY_PARAM = "api_key"


class BasicAuth(AuthProvider):
    name = "basic auth"

    def __init__(self, username: str, password: str) -> None:
        self._header = basic_authorization(username, password)
        self._identity = credentials_identity("basic", username, password)
        register_secrets(password, self._header.removeprefix("Basic "))

    @property
    def identity(self) -> str:
        return self._identity

    async def apply(self, request: OutgoingRequest, http: HttpClients, *, timeout: float) -> OutgoingRequest:
        return request.with_header("Authorization", self._header)


class HeaderCredential(AuthProvider):
    """One header whose value is the secret: bearer tokens, `custom` auth, API keys sent as a header."""

    def __init__(self, name: str, header: str, value: str) -> None:
        self.name = name
        self._header = header
        self._value = value
        self._identity = credentials_identity(name, header, value)
        register_secrets(value)

    @classmethod
    def bearer(cls, token: str) -> HeaderCredential:
        register_secrets(token)
        return cls("bearer token", "Authorization", f"Bearer {token}")

    @classmethod
    def custom(cls, header: str, value: str) -> HeaderCredential:
        return cls("custom auth header", header, value)

    @property
    def identity(self) -> str:
        return self._identity

    async def apply(self, request: OutgoingRequest, http: HttpClients, *, timeout: float) -> OutgoingRequest:
        return request.with_header(self._header, self._value)


class ApiKey(AuthProvider):
    """KEDA's `apiKey` with `method: header|query` and `keyParamName`."""

    name = "API key"

    def __init__(self, key: str, method: Literal["header", "query"] = "header", param_name: str = "") -> None:
        self._key = key
        self._method = method
        self._param = param_name or (DEFAULT_API_KEY_HEADER if method == "header" else DEFAULT_API_KEY_PARAM)
        self._identity = credentials_identity("apiKey", method, self._param, key)
        register_secrets(key)

    @property
    def identity(self) -> str:
        return self._identity

    async def apply(self, request: OutgoingRequest, http: HttpClients, *, timeout: float) -> OutgoingRequest:
        if self._method == "query":
            return request.with_param(self._param, self._key)
        return request.with_header(self._param, self._key)
