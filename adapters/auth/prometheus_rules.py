"""KEDA's Prometheus auth (pkg/scalers/authentication + prometheus_scaler.go), as one validation function.

- `authModes` (alias `authMode`): a comma list of apiKey, basic, bearer, custom, oauth, tls; bearer,
  basic and oauth exclude each other; each mode sends only its own credentials.
- Parameters: username/password; bearerToken (alias token); customAuthHeader/customAuthValue;
  ca/cert/key (PEM); oauthTokenURI/clientID/clientSecret/scopes (alias scope)/endpointParams;
  apiKey/method (header|query)/keyParamName.
- Cloud auth for the managed offerings, KEDA's pod identity providers: `podIdentity: gcp` (or a Google
  service account key in `credentials`), `podIdentity: aws` with `awsRegion` (or awsAccessKeyID /
  awsSecretAccessKey), `podIdentity: azure-workload` (with KEDA's `cloud` /
  `azureManagedPrometheusResourceURL`). As in KEDA, pod identity and authModes do not mix.

Deliberate difference: without `authModes` KEDA sends none of the credentials it was given; here the
mode is inferred from them when that is unambiguous (this scaler's behaviour before KEDA's authModes),
and two excluding ones without `authModes` are an error instead of a silent choice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, cast

from ..errors import InvalidMetadata
from ..http import HttpClients
from .aws import AwsSigV4
from .azure import MANAGED_PROMETHEUS_SCOPES, AzureWorkloadIdentity
from .google import MONITORING_READ, GoogleDefaultCredentials, GoogleServiceAccount
from .oauth2 import OAuth2ClientCredentials
from .params import check_cloud_host, combined_identity, endpoint_params, get, split_list
from .params import cloud_hosts as configured_cloud_hosts
from .request import AuthProvider, OutgoingRequest, apply_all
from .sigv4 import AwsCredentials
from .static import ApiKey, BasicAuth, HeaderCredential
from .tokens import TOKENS, TokenCache

MODES = ("apiKey", "basic", "bearer", "custom", "oauth", "tls")
EXCLUSIVE = ("bearer", "basic", "oauth")
POD_IDENTITIES = ("gcp", "aws", "azure-workload")


@dataclass(frozen=True)
class PrometheusAuth:
    """What to send: `providers` in order (a signer last), and TLS client material (PEM contents)."""

    modes: tuple[str, ...] = ()
    providers: tuple[AuthProvider, ...] = ()
    ca: str = field(default="", repr=False)
    cert: str = field(default="", repr=False)
    key: str = field(default="", repr=False)
    identity: str = ""

    @property
    def ambient(self) -> bool:
        return any(p.ambient for p in self.providers)

    def addresses(self) -> list[tuple[str, str]]:
        return [address for provider in self.providers for address in provider.addresses()]

    async def apply(self, request: OutgoingRequest, http: HttpClients, *, timeout: float) -> OutgoingRequest:
        return await apply_all(list(self.providers), request, http, timeout=timeout)


def prometheus_auth(
    values: Mapping[str, str],
    *,
    environ: Mapping[str, str] | None = None,
    cloud_hosts: tuple[str, ...] | None = None,
    cache: TokenCache = TOKENS,
) -> PrometheusAuth:
    """Validate and build. `values` are the trigger's keys after `xFromEnv` resolution (KEDA's names).

    Raises InvalidMetadata naming the key; missing ambient identities are SourceUnauthenticated.
    """
    modes = _modes(values)
    pod_identity = get(values, "podIdentity")
    if pod_identity and pod_identity not in POD_IDENTITIES:
        accepted = ", ".join(POD_IDENTITIES)
        raise InvalidMetadata("podIdentity", f"unknown provider '{pod_identity[:40]}'; accepted: {accepted}")
    cloud = _cloud(values, pod_identity)
    if cloud and get(values, "authModes", "authMode"):
        raise InvalidMetadata("authModes", "pod identity cannot be enabled with other auth types (as in KEDA)")
    providers: list[AuthProvider] = []
    for mode in modes:
        providers += _mode_provider(mode, values, cache)
    if cloud:
        hosts = configured_cloud_hosts() if cloud_hosts is None else cloud_hosts
        providers.append(_cloud_provider(cloud, values, environ, hosts, cache))
    pem = {k: get(values, k) for k in ("ca", "cert", "key")} if "tls" in modes or get(values, "ca") else {}
    return PrometheusAuth(
        modes=tuple(modes),
        providers=tuple(providers),
        ca=pem.get("ca", ""),
        cert=pem.get("cert", ""),
        key=pem.get("key", ""),
        # The key too, not only the (public) certificate: a trigger holding the certificate alone must not
        # share the reading of one that can prove it owns the key.
        identity=combined_identity(providers, pem.get("cert", ""), pem.get("key", "")),
    )


def _modes(values: Mapping[str, str]) -> list[str]:
    listed = split_list(get(values, "authModes", "authMode"))
    for mode in listed:
        if mode not in MODES:
            raise InvalidMetadata("authModes", f"unknown mode '{mode[:40]}'; accepted: {', '.join(MODES)}")
    if not listed:
        listed = _inferred(values)
    exclusive = [m for m in dict.fromkeys(listed) if m in EXCLUSIVE]
    if len(exclusive) > 1:
        raise InvalidMetadata(
            "authModes",
            f"{' and '.join(exclusive)} exclude each other (only one of bearer, basic, oauth)"
            + ("" if get(values, "authModes", "authMode") else "; set authModes to say which to send"),
        )
    return list(dict.fromkeys(listed))


def _inferred(values: Mapping[str, str]) -> list[str]:
    found = {
        "basic": bool(get(values, "username")),
        "bearer": bool(get(values, "bearerToken", "token")),
        "custom": bool(get(values, "customAuthHeader") or get(values, "customAuthValue")),
        "oauth": bool(get(values, "oauthTokenURI")),
        "apiKey": bool(get(values, "apiKey")),
        "tls": bool(get(values, "cert") or get(values, "key") or get(values, "certFile")),
    }
    return [mode for mode in MODES if found[mode]]


def _mode_provider(mode: str, values: Mapping[str, str], cache: TokenCache) -> list[AuthProvider]:
    if mode == "basic":
        if not get(values, "username"):
            raise InvalidMetadata("username", "is required when basic auth is enabled")
        return [BasicAuth(get(values, "username"), get(values, "password"))]
    if mode == "bearer":
        token = get(values, "bearerToken", "token")
        if not token:
            raise InvalidMetadata("bearerToken", "is required when bearer auth is enabled")
        return [HeaderCredential.bearer(token)]
    if mode == "custom":
        header, value = get(values, "customAuthHeader"), get(values, "customAuthValue")
        if not (header and value):
            raise InvalidMetadata("customAuthHeader", "customAuthHeader and customAuthValue are required")
        return [HeaderCredential.custom(header, value)]
    if mode == "apiKey":
        return [_api_key(values)]
    if mode == "oauth":
        uri, client_id = get(values, "oauthTokenURI"), get(values, "clientID")
        if not (uri and client_id):
            raise InvalidMetadata("oauthTokenURI", "oauthTokenURI and clientID are required when oauth is enabled")
        return [oauth2_provider(values, cache)]
    # tls: KEDA's PEM contents, or this scaler's files in the pod (certFile/keyFile).
    if not (get(values, "cert") and get(values, "key")) and not (get(values, "certFile") and get(values, "keyFile")):
        raise InvalidMetadata("cert", "cert and key are required when tls auth is enabled")
    return []  # TLS is the connection's, not a header


def _api_key(values: Mapping[str, str]) -> ApiKey:
    key = get(values, "apiKey")
    if not key:
        raise InvalidMetadata("apiKey", "is required when apiKey auth is enabled")
    method = get(values, "method") or "header"
    if method not in ("header", "query"):
        raise InvalidMetadata("method", f"must be header or query, got '{method[:20]}'")
    return ApiKey(key, cast(Literal["header", "query"], method), get(values, "keyParamName"))


def oauth2_provider(values: Mapping[str, str], cache: TokenCache) -> OAuth2ClientCredentials:
    uri = get(values, "oauthTokenURI")
    if not uri.startswith(("https://", "http://")):
        raise InvalidMetadata("oauthTokenURI", "must be an http:// or https:// URL")
    return OAuth2ClientCredentials(
        uri,
        get(values, "clientID"),
        get(values, "clientSecret"),
        scopes=split_list(get(values, "scopes", "scope")),
        endpoint_params=endpoint_params(get(values, "endpointParams")),
        cache=cache,
    )


def _cloud(values: Mapping[str, str], pod_identity: str) -> str:
    if pod_identity:
        return pod_identity
    if get(values, "credentials"):
        return "gcp"
    if get(values, "awsAccessKeyID"):
        return "aws"  # awsRegion alone selects nothing, as in KEDA: the pod's identity needs podIdentity: aws
    return ""


def _cloud_provider(
    cloud: str, values: Mapping[str, str], environ: Mapping[str, str] | None, hosts: tuple[str, ...], cache: TokenCache
) -> AuthProvider:
    # Cloud credentials, the pod's own or a named connection's, go only to that cloud's managed endpoint
    # (or a host the operator lists): a trigger that may set serverAddress must not collect the token.
    address = get(values, "serverAddress")
    if cloud == "gcp":
        check_cloud_host(address, "Google", hosts)
        key = get(values, "credentials")
        if key:
            return GoogleServiceAccount(key, scopes=(MONITORING_READ,), cache=cache)
        return GoogleDefaultCredentials(scopes=(MONITORING_READ,), cache=cache)
    if cloud == "aws":
        region = get(values, "awsRegion")
        if not region:
            raise InvalidMetadata("awsRegion", "is required for AWS SigV4 (Amazon Managed Prometheus)")
        key_id, secret = get(values, "awsAccessKeyID"), get(values, "awsSecretAccessKey")
        if bool(key_id) != bool(secret):
            raise InvalidMetadata("awsAccessKeyID", "awsAccessKeyID and awsSecretAccessKey must be given together")
        static = AwsCredentials(key_id, secret, get(values, "awsSessionToken")) if key_id else None
        check_cloud_host(address, "AWS", hosts)
        return AwsSigV4(region, static=static, environ=environ, cache=cache)
    check_cloud_host(address, "Azure", hosts)
    return AzureWorkloadIdentity(_azure_scope(values), environ=environ, cache=cache)


def _azure_scope(values: Mapping[str, str]) -> str:
    cloud = get(values, "cloud") or "AzurePublicCloud"
    if cloud.lower() == "private":
        scope = get(values, "azureManagedPrometheusResourceURL")
        if not scope:
            raise InvalidMetadata("azureManagedPrometheusResourceURL", "must be provided for Private cloud type")
        return scope
    try:
        return MANAGED_PROMETHEUS_SCOPES[cloud.upper()]
    except KeyError:
        raise InvalidMetadata("cloud", f"invalid cloud environment '{cloud[:40]}'") from None
