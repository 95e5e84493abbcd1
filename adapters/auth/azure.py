"""Azure workload identity (AKS): the pod's projected service account token is exchanged at Entra ID
for an access token by client credentials with a client_assertion (what azure-identity's
WorkloadIdentityCredential does). Done here with one form POST rather than azure-identity: that package
and its msal/azure-core stack are several MB and a sync HTTP client of their own, which would bypass the
project's response caps and redaction.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..errors import SourceUnauthenticated, SourceUnavailable
from ..http import HttpClients
from ..sources import credentials_identity
from .bearer import BearerTokenProvider
from .files import read_token_file
from .oauth2 import expires_in
from .request import register_secrets
from .token_endpoint import describe_endpoint, post_token_request
from .tokens import TOKENS, Token, TokenCache

DEFAULT_AUTHORITY = "https://login.microsoftonline.com/"
# KEDA's azureManagedPrometheusResourceURL per `cloud`.
MANAGED_PROMETHEUS_SCOPES = {
    "AZUREPUBLICCLOUD": "https://prometheus.monitor.azure.com/.default",
    "AZUREUSGOVERNMENTCLOUD": "https://prometheus.monitor.azure.us/.default",
    "AZURECHINACLOUD": "https://prometheus.monitor.azure.cn/.default",
}
_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def resource_scope(resource: str) -> str:
    """RabbitMQ's `workloadIdentityResource` is a resource (an app id URI); Entra v2 wants `<resource>/.default`."""
    return resource if resource.endswith("/.default") else resource.rstrip("/") + "/.default"


class AzureWorkloadIdentity(BearerTokenProvider):
    name = "Azure workload identity"
    ambient = True

    def __init__(self, scope: str, *, environ: Mapping[str, str] | None = None, cache: TokenCache = TOKENS) -> None:
        env = os.environ if environ is None else environ
        self.client_id = env.get("AZURE_CLIENT_ID", "")
        self.tenant_id = env.get("AZURE_TENANT_ID", "")
        self.token_file = env.get("AZURE_FEDERATED_TOKEN_FILE", "")
        missing = [
            k
            for k, v in (
                ("AZURE_CLIENT_ID", self.client_id),
                ("AZURE_TENANT_ID", self.tenant_id),
                ("AZURE_FEDERATED_TOKEN_FILE", self.token_file),
            )
            if not v
        ]
        if missing:
            raise SourceUnauthenticated(
                f"Azure workload identity: the scaler pod has no {', '.join(missing)} (is it labelled "
                'azure.workload.identity/use: "true" with a federated service account?)'
            )
        authority = (env.get("AZURE_AUTHORITY_HOST") or DEFAULT_AUTHORITY).rstrip("/")
        self.token_url = f"{authority}/{self.tenant_id}/oauth2/v2.0/token"
        self.scope = scope
        self._cache = cache
        self._identity = credentials_identity("azure-workload", self.token_url, self.client_id, scope)

    async def _fetch(self, http: HttpClients, timeout: float) -> Token[str]:
        assertion = await read_token_file(self.token_file, "AZURE_FEDERATED_TOKEN_FILE")
        register_secrets(assertion)
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "scope": self.scope,
            "client_assertion_type": _ASSERTION_TYPE,
            "client_assertion": assertion,
        }
        body = await post_token_request(
            http,
            self.token_url,
            form,
            timeout=timeout,
            provider="Azure AD token endpoint",
            refused_what="the workload identity's federated token",
        )
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise SourceUnavailable(f"Azure AD at {describe_endpoint(self.token_url)} answered without an access_token")
        register_secrets(access)
        return Token.lasting(access, expires_in(body, 3600.0))
