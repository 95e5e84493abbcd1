"""The shared auth layer: providers that add credentials to a request, tokens cached per identity, and
KEDA's auth rules per adapter family. Adapters build providers from metadata and call `apply()` on the
request they are about to send; nothing here knows which adapter calls it.
"""

from __future__ import annotations

from .aws import AwsSigV4
from .azure import AzureWorkloadIdentity
from .google import GoogleDefaultCredentials, GoogleServiceAccount
from .oauth2 import OAuth2ClientCredentials
from .prometheus_rules import PrometheusAuth, prometheus_auth
from .rabbitmq_rules import RabbitMQAuth, rabbitmq_auth
from .request import AuthProvider, OutgoingRequest, apply_all, send_authenticated
from .sigv4 import AwsCredentials, sign
from .static import ApiKey, BasicAuth, HeaderCredential
from .tokens import TOKENS, Token, TokenCache

__all__ = [
    "TOKENS",
    "ApiKey",
    "AuthProvider",
    "AwsCredentials",
    "AwsSigV4",
    "AzureWorkloadIdentity",
    "BasicAuth",
    "GoogleDefaultCredentials",
    "GoogleServiceAccount",
    "HeaderCredential",
    "OAuth2ClientCredentials",
    "OutgoingRequest",
    "PrometheusAuth",
    "RabbitMQAuth",
    "Token",
    "TokenCache",
    "apply_all",
    "prometheus_auth",
    "rabbitmq_auth",
    "send_authenticated",
    "sign",
]
