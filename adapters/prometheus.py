"""Prometheus: any PromQL query, with the parameters of KEDA's prometheus scaler.

Beyond KEDA: a query that returns several series is an error unless `aggregation` says how to combine
them, and the HTTP client is shared per endpoint instead of built per ScaledObject.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator

from .api import (
    Adapter,
    Duration,
    HttpClients,
    HttpEndpoint,
    InvalidMetadata,
    SourceKey,
    SourceNotFound,
    SourceRejectedQuery,
    SourceUnavailable,
    TriggerMetadata,
    aliases,
    credentials_identity,
    strip_userinfo,
)
from .auth import AuthProvider, OutgoingRequest, PrometheusAuth, prometheus_auth, send_authenticated

Aggregation = Literal["sum", "max", "min", "avg"]


def parse_pairs(key: str, text: str) -> tuple[tuple[str, str], ...]:
    """KEDA's `k=v,k=v` lists (queryParameters, customHeaders)."""
    pairs = []
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{key}: expected comma-separated key=value pairs, got an item without '='")
        pairs.append((name.strip(), value.strip()))
    return tuple(pairs)


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]*")
_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]*")


def _check_header(name: str, value: str) -> None:
    # HTTP headers are ASCII tokens and printable ASCII: anything else cannot be sent, so say so up front.
    if not _HEADER_NAME.fullmatch(name):
        raise ValueError("header names may use only letters, digits and !#$%&'*+.^_`|~-")
    if not _HEADER_VALUE.fullmatch(value):
        raise ValueError("header values must be printable ASCII (no line breaks)")


class PrometheusMetadata(TriggerMetadata):
    """Trigger metadata for `adapter: prometheus` (names as in KEDA's prometheus scaler)."""

    target_key = "threshold"
    activation_key = "activationThreshold"
    address_keys = ("serverAddress",)
    # Not `namespace`, `customHeaders`, `queryParameters`, TLS or auth keys: with a named connection they would
    # send its token to another tenant, or without verification.
    object_keys = ("query", "ignoreNullValues", "aggregation", "timeout")
    path_keys = ("caFile", "certFile", "keyFile")

    server_address: str = Field(description="Prometheus base URL, e.g. http://prometheus.monitoring:9090")
    query: str = Field(min_length=1, description="PromQL query; must return one series unless `aggregation` is set")
    threshold: float = Field(description="Target value per replica (HPA target); must be > 0")
    activation_threshold: float = Field(0.0, description="Active when the reading is strictly greater than this")
    namespace: str = Field("", description="Tenant namespace sent as the `namespace` query parameter (Thanos, Cortex)")
    query_parameters: str = Field("", description="Extra query parameters, `k=v,k=v`")
    custom_headers: str = Field("", description="Extra HTTP headers, `k=v,k=v` (e.g. X-Scope-OrgID=tenant)")
    ignore_null_values: bool = Field(
        True, description="An empty result or NaN/Inf reads as 0; when false it is an error"
    )
    aggregation: Aggregation | None = Field(
        None, description="How to combine several series: sum, max, min or avg (KEDA: always an error)"
    )
    unsafe_ssl: bool = Field(False, description="Skip TLS certificate verification")
    timeout: Duration | None = Field(
        None,
        le=3600,
        description="Query timeout: a duration (5s) or milliseconds, at most 1 h; 0 or unset: the server's",
    )
    auth_modes: str = Field(
        "",
        validation_alias=aliases("authModes", "authMode"),
        description="Comma list of apiKey, basic, bearer, custom, oauth, tls; each sends only its own "
        "credentials; bearer, basic and oauth exclude each other; unset: inferred from the credentials",
    )
    username: str = Field("", description="Basic auth user")
    password: SecretStr = Field(SecretStr(""), description="Basic auth password (prefer a named connection)")
    bearer_token: SecretStr = Field(
        SecretStr(""),
        validation_alias=aliases("bearerToken", "token"),
        description="Bearer token (prefer a named connection)",
    )
    cert: SecretStr = Field(SecretStr(""), description="`tls`: client certificate, PEM contents")
    key: SecretStr = Field(SecretStr(""), description="`tls`: client key, PEM contents")
    ca: str = Field("", description="CA certificates, PEM contents, for a private CA")
    oauth_token_uri: str = Field("", alias="oauthTokenURI", description="`oauth`: the token endpoint URL")
    client_id: str = Field("", alias="clientID", description="`oauth`: client id")
    client_secret: SecretStr = Field(SecretStr(""), alias="clientSecret", description="`oauth`: client secret")
    scopes: str = Field("", validation_alias=aliases("scopes", "scope"), description="`oauth`: scopes, comma list")
    endpoint_params: str = Field("", description="`oauth`: extra token request parameters, `a=b&c=d`")
    api_key: SecretStr = Field(SecretStr(""), description="`apiKey`: the key")
    method: Literal["header", "query"] = Field("header", description="`apiKey`: sent as a header or a query parameter")
    key_param_name: str = Field(
        "", description="`apiKey`: header or parameter name (default X-API-KEY, or api_key with `method: query`)"
    )
    custom_auth_header: str = Field("", description="Header name for `custom` auth")
    custom_auth_value: SecretStr = Field(SecretStr(""), description="Header value for `custom` auth")
    ca_file: str = Field("", description="CA bundle path in the scaler pod, for a private CA")
    cert_file: str = Field("", description="Client certificate path in the scaler pod (`tls` auth)")
    key_file: str = Field("", description="Client key path in the scaler pod (`tls` auth)")
    pod_identity: str = Field(
        "",
        description="The scaler pod's own cloud identity (KEDA's TriggerAuthentication podIdentity.provider): "
        "gcp, aws or azure-workload; for the clouds' managed Prometheus only",
    )
    credentials: SecretStr = Field(
        SecretStr(""), description="Google service account key JSON (KEDA's credentialsFromEnv), for Managed Prometheus"
    )
    aws_region: str = Field("", description="AWS region of the Amazon Managed Prometheus workspace (SigV4)")
    aws_access_key_id: str = Field("", alias="awsAccessKeyID", description="AWS access key id (SigV4)")
    aws_secret_access_key: SecretStr = Field(
        SecretStr(""), alias="awsSecretAccessKey", description="AWS secret access key (SigV4)"
    )
    aws_session_token: SecretStr = Field(SecretStr(""), description="AWS session token (SigV4, temporary keys)")
    cloud: str = Field(
        "", description="`azure-workload`: AzurePublicCloud (default), AzureUSGovernmentCloud, AzureChinaCloud, Private"
    )
    azure_managed_prometheus_resource_url: str = Field(
        "",
        alias="azureManagedPrometheusResourceURL",
        description="`azure-workload` with `cloud: Private`: the token scope's resource URL",
    )
    _auth: PrometheusAuth = PrivateAttr(default_factory=PrometheusAuth)

    @field_validator("server_address")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if any(c.isspace() or not c.isprintable() for c in value):
            raise ValueError("must be a URL without spaces or control characters")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError("has an invalid port") from None
        return value

    @field_validator("query_parameters", "custom_headers")
    @classmethod
    def _check_pairs(cls, value: str) -> str:
        parse_pairs("value", value)
        return value

    @field_validator("custom_headers")
    @classmethod
    def _check_headers(cls, value: str) -> str:
        for name, text in parse_pairs("customHeaders", value):
            _check_header(name, text)
        return value

    @field_validator("custom_auth_header")
    @classmethod
    def _check_header_name(cls, value: str) -> str:
        _check_header(value, "")
        return value

    @field_validator("bearer_token", "custom_auth_value")
    @classmethod
    def _check_header_value(cls, value: SecretStr) -> SecretStr:
        _check_header("x", value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _check_auth(self) -> PrometheusMetadata:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("certFile: `certFile` and `keyFile` must be given together")
        if (self.cert.get_secret_value() or self.key.get_secret_value()) and self.cert_file:
            raise ValueError("cert: give the client certificate as `cert`/`key` or as `certFile`/`keyFile`, not both")
        if self.ca and self.ca_file:
            raise ValueError("ca: give the CA as `ca` or as `caFile`, not both")
        # One validation for every auth key, the shared layer's (KEDA's rules); it names the key it refuses.
        self._auth = prometheus_auth(self._auth_values())
        return self

    def _auth_values(self) -> dict[str, str]:
        """The auth keys under KEDA's names, as the shared auth layer reads them."""
        values = self.keda_values()
        parts = urlsplit(self.server_address)
        listed = [m.strip() for m in self.auth_modes.split(",") if m.strip()]
        if not self.username and parts.username and (not listed or "basic" in listed):
            # Userinfo in serverAddress is basic auth (this scaler's habit before authModes).
            values["username"], values["password"] = unquote(parts.username), unquote(parts.password or "")
        return values

    @property
    def auth(self) -> PrometheusAuth:
        return self._auth

    @property
    def modes(self) -> list[str]:
        return list(self._auth.modes)

    @property
    def base_url(self) -> str:
        return strip_userinfo(self.server_address).rstrip("/")

    def embedded_addresses(self) -> list[tuple[str, str]]:
        # Token endpoints named in metadata (oauthTokenURI, a Google key's token_uri): the egress policy checks them.
        return self._auth.addresses()

    def secrets(self) -> list[str]:
        found = super().secrets()
        password = urlsplit(self.server_address).password
        # Header values are often credentials (X-API-Key, a tenant token): redacted like passwords.
        headers = [value for _, value in parse_pairs("customHeaders", self.custom_headers)]
        return [*found, *headers, unquote(password)] if password else [*found, *headers]

    def headers(self) -> dict[str, str]:
        """The trigger's own headers (customHeaders); credentials are added by the auth providers."""
        return dict(parse_pairs("customHeaders", self.custom_headers))

    def params(self) -> list[tuple[str, str]]:
        params = [("query", self.query), *parse_pairs("queryParameters", self.query_parameters)]
        if self.namespace:
            params.append(("namespace", self.namespace))
        return params


class PrometheusAdapter(Adapter[PrometheusMetadata]):
    name = "prometheus"
    metadata_model = PrometheusMetadata
    description = "The value of a PromQL instant query (any Prometheus-compatible API)"

    def source_key(self, metadata: PrometheusMetadata) -> SourceKey:
        auth = metadata.auth
        return SourceKey(
            adapter=self.name,
            endpoint=metadata.base_url,
            object=metadata.query,
            mode=metadata.aggregation or "",
            # A digest of every credential sent (the providers' identities), never a secret.
            identity=credentials_identity(auth.identity, metadata.cert_file if "tls" in auth.modes else ""),
            # Headers and parameters can select another tenant or change the answer; TLS settings can
            # turn a failure into a reading, so triggers that differ in them must not share one.
            options=(
                (
                    "tls",
                    f"verify={not metadata.unsafe_ssl};ca={metadata.ca_file};"
                    f"ca_pem={credentials_identity(metadata.ca)};cert={metadata.cert_file}",
                ),
                ("headers", metadata.custom_headers),
                ("params", metadata.query_parameters),
                ("namespace", metadata.namespace),
                ("nulls", str(metadata.ignore_null_values)),
            ),
        )

    def uses_ambient_credentials(self, metadata: PrometheusMetadata) -> bool:
        # podIdentity gcp / aws / azure-workload: the scaler pod's own ADC, IRSA / Pod Identity, Workload Identity.
        return metadata.auth.ambient

    def keda_metric_name(self, metadata: PrometheusMetadata) -> str:
        return "prometheus"

    def metric_name_hint(self, metadata: PrometheusMetadata) -> str:
        return ""  # the engine adds a digest of the source key; a query makes a poor name

    def timeout_seconds(self, metadata: PrometheusMetadata) -> float | None:
        return metadata.timeout or None

    def endpoint(self, metadata: PrometheusMetadata) -> HttpEndpoint:
        auth = metadata.auth
        tls = "tls" in auth.modes  # as in KEDA, the client certificate is sent only in `tls` mode
        return HttpEndpoint.for_url(
            metadata.base_url,
            verify=not metadata.unsafe_ssl,
            ca_file=metadata.ca_file or None,
            cert_file=(metadata.cert_file or None) if tls else None,
            key_file=(metadata.key_file or None) if tls else None,
            ca_pem=metadata.ca,
            cert_pem=auth.cert if tls else "",
            key_pem=auth.key if tls else "",
        )

    async def query(self, metadata: PrometheusMetadata, timeout: float) -> Any:
        """Run the instant query and return Prometheus' `data` object."""
        return await instant_query(
            self.context.http,
            metadata.base_url,
            metadata.params(),
            headers=metadata.headers(),
            providers=metadata.auth.providers,
            endpoint=self.endpoint(metadata),
            timeout=timeout,
            source=f"Prometheus at {metadata.base_url}",
        )

    async def measure(self, metadata: PrometheusMetadata) -> float:
        timeout = self.timeout_seconds(metadata) or self.context.default_timeout
        try:
            data = await self.query(metadata, timeout)
        except SourceRejectedQuery as exc:
            raise InvalidMetadata("query", exc.message) from None
        except SourceNotFound as exc:
            raise SourceNotFound(f"{exc.message} (is `serverAddress` the Prometheus base URL?)") from None
        return reduce_result(data, metadata)


# An instant query's answer is one sample per series: a trigger needs one series, or a few with
# `aggregation`. 1 MiB holds ~3,000 series with a dozen labels each. Parsing is on the event loop (a thread
# would not help: json.loads holds the GIL), so the cap is what bounds the stall: 16 MiB of small series
# held the loop for 2-4 s and took 220 MB more, 1 MiB of them a tenth of that stall or less and 14 MB
# (bench/bounded_work.py, loaded 2-core machine). The series cap bounds the work after parsing.
MAX_ANSWER_BYTES = 1024 * 1024
MAX_SERIES = 10_000


async def instant_query(
    http: HttpClients,
    base_url: str,
    params: list[tuple[str, str]],
    *,
    headers: Mapping[str, str],
    providers: Sequence[AuthProvider] = (),
    endpoint: HttpEndpoint,
    timeout: float,
    source: str,
    max_bytes: int = MAX_ANSWER_BYTES,
) -> Any:
    """GET `<base_url>/api/v1/query` and return Prometheus' `data` object.

    The one PromQL client of the project: any Prometheus-compatible API (Prometheus, Thanos, Cloud
    Monitoring's PromQL endpoint for the Pub/Sub adapter) is read through here. An answer longer than
    `max_bytes` is refused unparsed, with the limit in the message. `providers` add the credentials
    (adapters/auth); a 401 names them.
    """
    parts = urlsplit(base_url)
    url = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + "/api/v1/query", "", ""))
    # The trigger's own headers go in first: a signer (SigV4) signs them with the rest.
    request = OutgoingRequest("GET", url, tuple(params), tuple(headers.items()))
    body = await send_authenticated(
        http, request, providers, endpoint=endpoint, source=source, timeout=timeout, max_bytes=max_bytes
    )
    if not isinstance(body, dict) or body.get("status") != "success" or not isinstance(body.get("data"), dict):
        raise SourceUnavailable(f"{source} did not answer with a query result")
    return body["data"]


def sample_values(data: Any) -> list[float]:
    """The values of an instant query result (one per series; one for a scalar)."""
    kind = data.get("resultType")
    result = data.get("result")
    if kind == "scalar" and isinstance(result, list):
        return [_sample_value(result)]
    if kind == "vector" and isinstance(result, list):
        if len(result) > MAX_SERIES:
            raise InvalidMetadata(
                "query",
                f"returned {len(result)} series, more than the limit of {MAX_SERIES:,}; "
                "aggregate in PromQL (e.g. sum(...)) so that it returns fewer",
            )
        return [_sample_value(series.get("value")) for series in result if isinstance(series, dict)]
    raise InvalidMetadata("query", f"must return an instant vector or scalar, got a {kind or 'malformed'} result")


def reduce_result(data: Any, metadata: PrometheusMetadata) -> float:
    """One number from a query result: the single series, or the declared aggregation of several."""
    result = data.get("result") if isinstance(data, dict) else None
    if data.get("resultType") == "vector" and isinstance(result, list):
        # KEDA reads a series whose `value` is an empty list like an empty result (0 with ignoreNullValues).
        result = [s for s in result if not (isinstance(s, dict) and s.get("value") == [])]
        data = {**data, "result": result}
    values = sample_values(data)
    if not values:
        if metadata.ignore_null_values:
            return 0.0
        raise SourceNotFound(
            "the query returned no series (the target may be gone); set ignoreNullValues: true to read it as 0"
        )
    if len(values) > 1 and metadata.aggregation is None:
        raise InvalidMetadata(
            "query",
            f"returned {len(values)} series; make it return one, or set `aggregation` to sum, max, min or avg",
        )
    if any(not math.isfinite(v) for v in values):
        if not metadata.ignore_null_values:
            raise SourceRejectedQuery("the query returned NaN or Inf; set ignoreNullValues: true to read it as 0")
        values = [v if math.isfinite(v) else 0.0 for v in values]
    return _aggregate(values, metadata.aggregation or "sum")


def _aggregate(values: list[float], how: str) -> float:
    if how == "max":
        return max(values)
    if how == "min":
        return min(values)
    if how == "avg":
        return sum(values) / len(values)
    return sum(values)


def _sample_value(sample: Any) -> float:
    if not (isinstance(sample, list) and len(sample) == 2):
        raise SourceUnavailable("Prometheus returned a malformed sample")
    try:
        return float(sample[1])
    except (TypeError, ValueError, OverflowError):  # OverflowError: a JSON integer of hundreds of digits
        raise SourceUnavailable("Prometheus returned a sample that is not a number") from None
