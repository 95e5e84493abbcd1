"""What both Redis adapters share: the connection keys (named as in KEDA's redis scalers) and pooled clients.

One redis.asyncio client (with its own bounded connection pool) per address, database, credentials and TLS
settings, shared by every ScaledObject that reads that Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import Field, SecretStr, field_validator

if TYPE_CHECKING:  # redis-py itself is imported by the first reading: the scaler's start-up loads every plugin
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

from adapters.api import (
    Adapter,
    AdapterContext,
    AdapterError,
    ClientPool,
    SourceNotFound,
    SourcePermissionDenied,
    SourcePrecondition,
    SourceRejectedQuery,
    SourceTimeout,
    SourceUnauthenticated,
    SourceUnavailable,
    TriggerMetadata,
    credentials_identity,
)

_MAX_CONNECTIONS = 8  # per Redis endpoint; more callers wait for a free connection instead of opening one
_MAX_ERROR = 200


def split_address(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port`, as KEDA's redis scalers take it."""
    host, sep, port = address.rpartition(":")
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError("must be host:port, e.g. redis.default.svc:6379")
    return host, int(port)


class RedisConnectionMetadata(TriggerMetadata):
    """The keys that say which Redis to read and how to log in."""

    address_keys = ("address",)
    path_keys = ("caFile",)

    address: str = Field(description="Redis `host:port`, e.g. redis.default.svc:6379")
    database_index: int = Field(0, ge=0, description="Database number (SELECT)")
    enable_tls: bool = Field(
        False,
        alias="enableTLS",
        description="TLS to Redis. KEDA also reads this key for its own connection to the scaler: "
        "set it in a named connection instead, unless the scaler serves TLS too",
    )
    unsafe_ssl: bool = Field(False, description="With TLS, skip certificate verification")
    ca_file: str = Field("", description="CA bundle path in the scaler pod, for a private CA (TLS)")
    username: str = Field("", description="ACL user (Redis 6+)")
    password: SecretStr = Field(SecretStr(""), description="Password (prefer a named connection)")

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        split_address(value)
        return value

    @property
    def endpoint(self) -> str:
        return f"{'rediss' if self.enable_tls else 'redis'}://{self.address}/{self.database_index}"

    @property
    def tls_options(self) -> tuple[tuple[str, str], ...]:
        """For the source key: a reading fetched without certificate checks must not serve a trigger with them."""
        return (("verify", str(not self.unsafe_ssl).lower()),) if self.enable_tls else ()


@dataclass(frozen=True, slots=True)
class RedisEndpoint:
    """The pool key: everything that needs a separate client. The password is compared, never printed."""

    host: str
    port: int
    db: int
    username: str
    password: SecretStr
    tls: bool
    verify: bool
    ca_file: str

    @classmethod
    def of(cls, metadata: RedisConnectionMetadata) -> RedisEndpoint:
        host, port = split_address(metadata.address)
        return cls(
            host,
            port,
            metadata.database_index,
            metadata.username,
            metadata.password,
            metadata.enable_tls,
            not metadata.unsafe_ssl,
            metadata.ca_file,
        )


M = TypeVar("M", bound=RedisConnectionMetadata)


class RedisAdapter(Adapter[M], Generic[M]):
    """Base of the Redis adapters: a pooled client per endpoint, and redis errors as adapter errors."""

    def __init__(self, context: AdapterContext) -> None:
        super().__init__(context)
        self.clients: ClientPool[RedisEndpoint, aioredis.Redis] = ClientPool("clients", self._create, self._close)
        self.pools.append(self.clients)

    async def _create(self, endpoint: RedisEndpoint) -> aioredis.Redis:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        options: dict[str, Any] = {}
        if endpoint.tls:
            options = {
                "connection_class": aioredis.SSLConnection,
                "ssl_cert_reqs": "required" if endpoint.verify else "none",
                "ssl_check_hostname": endpoint.verify,
                "ssl_ca_certs": endpoint.ca_file or None,
            }
        pool = aioredis.BlockingConnectionPool(
            host=endpoint.host,
            port=endpoint.port,
            db=endpoint.db,
            username=endpoint.username or None,
            password=endpoint.password.get_secret_value() or None,
            socket_connect_timeout=self.context.default_timeout,
            socket_timeout=self.context.default_timeout,
            # Fail fast: the engine caches the failure briefly and KEDA polls again; retrying here would
            # only hold the caller past its timeout.
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
            max_connections=_MAX_CONNECTIONS,
            timeout=None,
            **options,
        )
        return aioredis.Redis.from_pool(pool)

    @staticmethod
    async def _close(client: aioredis.Redis) -> None:
        await client.aclose()

    async def client(self, metadata: M) -> aioredis.Redis:
        return await self.clients.get(RedisEndpoint.of(metadata))

    @staticmethod
    def identity(metadata: M) -> str:
        return credentials_identity(metadata.username, metadata.password.get_secret_value(), metadata.ca_file)


def translate(exc: RedisError, what: str) -> AdapterError:
    """A redis-py error as the adapter error the engine maps to a gRPC status. `what` names the object."""
    from redis.exceptions import AuthenticationError, ConnectionError, NoPermissionError, ResponseError, TimeoutError

    detail = str(exc)[:_MAX_ERROR]
    if isinstance(exc, AuthenticationError):
        return SourceUnauthenticated(f"{what}: Redis refused the credentials: {detail}")
    if isinstance(exc, NoPermissionError):
        return SourcePermissionDenied(f"{what}: the Redis user may not read it: {detail}")
    if isinstance(exc, TimeoutError):
        return SourceTimeout(f"{what}: Redis did not answer in time")
    if isinstance(exc, ConnectionError):
        return SourceUnavailable(f"{what}: cannot reach Redis: {detail}")
    if isinstance(exc, ResponseError):
        if detail.startswith("WRONGTYPE"):
            return SourcePrecondition(f"{what} holds a value of another type")
        if "no such key" in detail:
            return SourceNotFound(f"{what} does not exist")
        if detail.startswith("NOGROUP"):
            return SourceNotFound(f"{what}: the consumer group does not exist")
        if detail.startswith(("NOAUTH", "WRONGPASS")):
            return SourceUnauthenticated(f"{what}: Redis refused the credentials: {detail}")
        return SourceRejectedQuery(f"{what}: Redis refused the command: {detail}")
    return SourceUnavailable(f"{what}: Redis failed: {type(exc).__name__}: {detail}")
