"""KEDA's RabbitMQ auth rules (rabbitmq_scaler.go Validate / validateOAuth2 / buildAMQPConfig), as one
validation function: TLS material, SASL EXTERNAL, OAuth2 and Azure workload identity for the management API.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from ..errors import InvalidMetadata
from ..http import HttpClients
from .azure import AzureWorkloadIdentity, resource_scope
from .params import combined_identity, get
from .prometheus_rules import oauth2_provider
from .request import AuthProvider, OutgoingRequest, apply_all
from .tokens import TOKENS, TokenCache

Protocol = Literal["amqp", "http"]


@dataclass(frozen=True)
class RabbitMQAuth:
    protocol: Protocol
    tls: bool = False
    ca: str = field(default="", repr=False)
    cert: str = field(default="", repr=False)
    key: str = field(default="", repr=False)
    key_password: str = field(default="", repr=False)
    sasl_external: bool = False
    """AMQP: authenticate by the client certificate (SASL EXTERNAL), not by username/password."""
    http_providers: tuple[AuthProvider, ...] = ()
    """Management API: OAuth2 or Azure workload identity (basic auth stays with the host URL / username)."""
    identity: str = ""

    def addresses(self) -> list[tuple[str, str]]:
        return [address for provider in self.http_providers for address in provider.addresses()]

    async def apply(self, request: OutgoingRequest, http: HttpClients, *, timeout: float) -> OutgoingRequest:
        return await apply_all(list(self.http_providers), request, http, timeout=timeout)


def rabbitmq_auth(
    values: Mapping[str, str], *, environ: Mapping[str, str] | None = None, cache: TokenCache = TOKENS
) -> RabbitMQAuth:
    """Validate KEDA's RabbitMQ auth parameters (`host`, `protocol`, `username`, `password`, `tls`, `ca`,
    `cert`, `key`, `keyPassword`, `oauthTokenURI`, `clientID`, `clientSecret`, `scopes`, `endpointParams`,
    `workloadIdentityResource`) and build what to send. Raises InvalidMetadata naming the key."""
    host = get(values, "host")
    protocol = _protocol(get(values, "protocol") or "auto", host)
    tls = get(values, "tls") or "disable"
    if tls not in ("enable", "disable"):
        raise InvalidMetadata("tls", f"must be enable or disable, got '{tls[:20]}'")
    cert, key = get(values, "cert"), get(values, "key")
    if bool(cert) != bool(key):
        raise InvalidMetadata("cert" if key else "key", "both key and certificate must be provided")
    username, password = get(values, "username"), get(values, "password")
    if bool(username) != bool(password):
        raise InvalidMetadata("password" if username else "username", "username and password must be given together")
    resource = get(values, "workloadIdentityResource")
    if resource and protocol == "amqp":
        raise InvalidMetadata("workloadIdentityResource", "workload identity is supported only with the HTTP protocol")
    providers: list[AuthProvider] = []
    if any(get(values, k) for k in ("oauthTokenURI", "clientID", "clientSecret")):
        missing = [k for k in ("oauthTokenURI", "clientID", "clientSecret") if not get(values, k)]
        if missing:
            raise InvalidMetadata(missing[0], "OAuth2 needs oauthTokenURI, clientID and clientSecret")
        if protocol == "amqp":
            raise InvalidMetadata("oauthTokenURI", "OAuth2 is supported only with the HTTP protocol, not AMQP")
        if (username and password) or resource:
            raise InvalidMetadata(
                "oauthTokenURI", "OAuth2 cannot be combined with username/password or Azure workload identity"
            )
        providers.append(oauth2_provider(values, cache))
    elif resource:
        providers.append(AzureWorkloadIdentity(resource_scope(resource), environ=environ, cache=cache))
    url_password = _url_password(host)
    # KEDA: a client certificate over TLS, with no username/password anywhere, logs in by the certificate.
    external = tls == "enable" and bool(cert and key) and not (username or password) and not url_password
    return RabbitMQAuth(
        protocol=protocol,
        tls=tls == "enable",
        ca=get(values, "ca"),
        cert=cert,
        key=key,
        key_password=get(values, "keyPassword"),
        sasl_external=external and protocol == "amqp",
        http_providers=tuple(providers),
        # Key and its password too: the certificate is public, a reading must not be shared on it alone.
        identity=combined_identity(providers, cert, key, get(values, "keyPassword")),
    )


def _protocol(protocol: str, host: str) -> Protocol:
    if protocol in ("amqp", "http"):
        return protocol  # type: ignore[return-value]
    if protocol != "auto":
        raise InvalidMetadata("protocol", f"must be auto, amqp or http, got '{protocol[:20]}'")
    scheme = urlsplit(host).scheme
    if scheme in ("amqp", "amqps"):
        return "amqp"
    if scheme in ("http", "https"):
        return "http"
    raise InvalidMetadata("host", f"unknown URL scheme '{scheme[:20]}' (amqp, amqps, http or https)")


def _url_password(host: str) -> bool:
    try:
        return urlsplit(host).password is not None
    except ValueError:
        return False
