"""Errors an adapter raises. The engine maps each class to one gRPC status code.

Adapters never import grpc: they say *what* went wrong, the engine decides how KEDA hears it.
Messages must name the key or the object, and must never contain a secret (the engine redacts
known secrets and URL userinfo again as a second line of defence).
"""

from __future__ import annotations


class AdapterError(Exception):
    """Base class; `status` is the gRPC status code name the engine answers with."""

    status = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidMetadata(AdapterError):
    """Trigger metadata is wrong. `key` names the offending metadata key."""

    status = "INVALID_ARGUMENT"

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"metadata key '{key}': {message}" if key else message)
        self.key = key


class SourceUnavailable(AdapterError):
    """The source cannot be reached (connection refused, DNS failure, 5xx)."""

    status = "UNAVAILABLE"


class SourceTimeout(AdapterError):
    """The source did not answer within the per-source timeout."""

    status = "DEADLINE_EXCEEDED"


class SourceNotFound(AdapterError):
    """The source says the measured object (queue, subscription, series) does not exist."""

    status = "NOT_FOUND"


class SourcePrecondition(AdapterError):
    """The object exists but cannot be measured safely or in this way."""

    status = "FAILED_PRECONDITION"


class SourceUnauthenticated(AdapterError):
    """The source refused the credentials (HTTP 401, AMQP access refused at login)."""

    status = "UNAUTHENTICATED"


class SourcePermissionDenied(AdapterError):
    """The credentials are valid but not allowed to read the object (HTTP 403), or policy forbids it."""

    status = "PERMISSION_DENIED"


class SourceRejectedQuery(AdapterError):
    """The source understood the request and refused its content (e.g. a PromQL syntax error)."""

    status = "INVALID_ARGUMENT"
