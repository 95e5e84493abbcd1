"""The public adapter API: everything a built-in or third-party adapter needs, importable from one place.

from adapters.api import Adapter, TriggerMetadata, SourceKey, SourceUnavailable, ...
"""

from __future__ import annotations

from .base import API_VERSION, Adapter, AdapterContext
from .errors import (
    AdapterError,
    InvalidMetadata,
    SourceNotFound,
    SourcePermissionDenied,
    SourcePrecondition,
    SourceRejectedQuery,
    SourceTimeout,
    SourceUnauthenticated,
    SourceUnavailable,
)
from .http import HttpClients, HttpEndpoint
from .metadata import (
    Duration,
    TriggerMetadata,
    aliases,
    describe_fields,
    normalize_string,
    parse_duration,
    parse_metadata,
    resolve_from_env,
)
from .pool import ClientPool
from .redaction import SECRETS, redact, strip_userinfo
from .registry import ENTRY_POINT_GROUP, AdapterLoadError, AdapterRegistry, discover_adapter_classes
from .resolve import Resolve, idna_host, system_resolve
from .sources import SourceKey, credentials_identity

__all__ = [
    "API_VERSION",
    "ENTRY_POINT_GROUP",
    "SECRETS",
    "Adapter",
    "AdapterContext",
    "AdapterError",
    "AdapterLoadError",
    "AdapterRegistry",
    "ClientPool",
    "Duration",
    "HttpClients",
    "HttpEndpoint",
    "InvalidMetadata",
    "Resolve",
    "SourceKey",
    "SourceNotFound",
    "SourcePermissionDenied",
    "SourcePrecondition",
    "SourceRejectedQuery",
    "SourceTimeout",
    "SourceUnauthenticated",
    "SourceUnavailable",
    "TriggerMetadata",
    "aliases",
    "credentials_identity",
    "describe_fields",
    "discover_adapter_classes",
    "idna_host",
    "normalize_string",
    "parse_duration",
    "parse_metadata",
    "redact",
    "resolve_from_env",
    "strip_userinfo",
    "system_resolve",
]
