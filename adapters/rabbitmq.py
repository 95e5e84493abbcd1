"""RabbitMQ: queue depth and rates with the parameters of KEDA's rabbitmq scaler.

AMQP reads the ready-message count with a passive queue.declare on a pooled connection (see
rabbitmq_amqp); HTTP reads the management API's queue object (see rabbitmq_http), which is also the only
way to get rates, unacknowledged messages, regex matches and stream queues. The numbers and the
activity rules of each mode are KEDA's (pkg/scalers/rabbitmq_scaler.go).
"""

from __future__ import annotations

import dataclasses
from typing import Literal
from urllib.parse import quote_plus, unquote, urlsplit

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator

from .api import (
    Adapter,
    AdapterContext,
    Duration,
    HttpEndpoint,
    SourceKey,
    TriggerMetadata,
    aliases,
    credentials_identity,
    normalize_string,
)
from .auth import RabbitMQAuth, rabbitmq_auth
from .files import TlsFiles
from .rabbitmq_amqp import AmqpClients, AmqpTarget
from .rabbitmq_http import ManagementQuery, Operation, QueueStats, read_matching, read_queue

Mode = Literal[
    "QueueLength", "MessageRate", "DeliverGetRate", "PublishedToDeliveredRatio", "ExpectedQueueConsumptionTime"
]
RATE_MODES = ("MessageRate", "DeliverGetRate", "PublishedToDeliveredRatio", "ExpectedQueueConsumptionTime")
# Modes whose activity is not simply "value > activationValue" in KEDA.
_OWN_ACTIVITY = ("MessageRate", "PublishedToDeliveredRatio", "ExpectedQueueConsumptionTime")
DEFAULT_QUEUE_LENGTH = 20.0
_SCHEMES = {"amqp": "amqp", "amqps": "amqp", "http": "http", "https": "http"}
_DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671, "http": 80, "https": 443}


class RabbitMQMetadata(TriggerMetadata):
    """Trigger metadata for `adapter: rabbitmq` (names as in KEDA's rabbitmq scaler)."""

    address_keys = ("host",)
    # Not `vhostName` (another vhost the connection's user may read), `protocol`, TLS or credential keys.
    object_keys = (
        "queueName",
        "mode",
        "queueLength",
        "useRegex",
        "operation",
        "pageSize",
        "excludeUnacknowledged",
        "timeout",
    )
    path_keys = ("caFile", "certFile", "keyFile")

    host: str = Field(
        description="amqp://, amqps://, http:// or https:// URL of the broker (the management API for http), "
        "optionally ending in the vhost, e.g. amqp://rabbitmq:5672/orders"
    )
    queue_name: str = Field(min_length=1, description="Queue name, or a regex over queue names with `useRegex`")
    protocol: Literal["auto", "amqp", "http"] = Field(
        "auto", description="amqp, http, or auto (from the `host` scheme)"
    )
    mode: Mode | None = Field(
        None,
        description="QueueLength, MessageRate, DeliverGetRate, PublishedToDeliveredRatio or "
        "ExpectedQueueConsumptionTime (QueueLength with value 20 when neither mode nor value is set)",
    )
    value: float | None = Field(None, description="Target per replica (HPA target); required with `mode`")
    activation_value: float = Field(0.0, description="Active when the reading is strictly greater than this")
    queue_length: float | None = Field(None, description="Deprecated: use `mode: QueueLength` and `value`")
    vhost_name: str = Field("", description="Vhost; overrides the one in `host` (default `/`)")
    use_regex: bool = Field(False, description="`queueName` is a regex; every matching queue counts (HTTP only)")
    operation: Operation = Field("sum", description="How `useRegex` combines queues: sum, max or avg")
    page_size: int = Field(
        100, ge=1, le=500, description="Queues per management API page with `useRegex` (every page is read)"
    )
    exclude_unacknowledged: bool = Field(
        False, description="QueueLength counts ready messages only (HTTP only; AMQP always does)"
    )
    timeout: Duration | None = Field(
        None,
        le=3600,
        description="Query timeout: a duration (5s) or milliseconds, at most 1 h; 0 or unset: the server's",
    )
    unsafe_ssl: bool = Field(False, description="Skip TLS certificate verification")
    username: str = Field("", description="User; overrides the one in `host` (give with `password`)")
    password: SecretStr = Field(SecretStr(""), description="Password (prefer a named connection)")
    ca_file: str = Field("", description="CA bundle path in the scaler pod, for a private CA")
    cert_file: str = Field("", description="Client certificate path in the scaler pod (with `keyFile`)")
    key_file: str = Field("", description="Client key path in the scaler pod (with `certFile`)")
    tls: Literal["enable", "disable"] = Field(
        "disable", description="enable: TLS with `ca`/`cert`/`key` (KEDA's keys; AMQP then always uses TLS)"
    )
    ca: str = Field("", description="CA certificates, PEM contents (with `tls: enable`)")
    cert: SecretStr = Field(SecretStr(""), description="Client certificate, PEM contents (with `tls: enable`)")
    key: SecretStr = Field(SecretStr(""), description="Client key, PEM contents (with `tls: enable`)")
    key_password: SecretStr = Field(SecretStr(""), description="Password of an encrypted `key`")
    oauth_token_uri: str = Field("", alias="oauthTokenURI", description="OAuth2 token endpoint (management API only)")
    client_id: str = Field("", alias="clientID", description="OAuth2 client id")
    client_secret: SecretStr = Field(SecretStr(""), alias="clientSecret", description="OAuth2 client secret")
    scopes: str = Field("", validation_alias=aliases("scopes", "scope"), description="OAuth2 scopes, comma list")
    endpoint_params: str = Field("", description="OAuth2 extra token request parameters, `a=b&c=d`")
    workload_identity_resource: str = Field(
        "", description="Azure workload identity: the application ID URI the management API's token is for"
    )
    _auth: RabbitMQAuth = PrivateAttr(default_factory=lambda: RabbitMQAuth("amqp"))

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in _SCHEMES:
            raise ValueError(f"unknown URL scheme '{parts.scheme}'; use amqp://, amqps://, http:// or https://")
        if not parts.hostname:
            raise ValueError("must be a URL with a host, e.g. amqp://rabbitmq:5672/")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError("has an invalid port") from None
        return value

    @model_validator(mode="after")
    def _check(self) -> RabbitMQMetadata:
        scheme_protocol = _SCHEMES[urlsplit(self.host).scheme]
        if self.protocol not in ("auto", scheme_protocol):
            raise ValueError(f"protocol: '{self.protocol}' does not match the {urlsplit(self.host).scheme}:// host")
        if bool(self.username) != bool(self.password.get_secret_value()):
            raise ValueError("username: `username` and `password` must be given together")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("certFile: `certFile` and `keyFile` must be given together")
        if (self.cert_file or self.ca_file) and urlsplit(self.host).scheme not in ("amqps", "https"):
            raise ValueError("certFile: TLS files need an amqps:// or https:// host")
        if self.tls == "enable" and urlsplit(self.host).scheme == "http":
            # KEDA would send the management API request in clear text with the client certificate unused.
            raise ValueError("tls: `tls: enable` needs an https:// host for the management API")
        if (self.cert.get_secret_value() or self.ca) and (self.cert_file or self.ca_file):
            raise ValueError("cert: give TLS material as `ca`/`cert`/`key` or as `caFile`/`certFile`/`keyFile`")
        # KEDA's auth rules (OAuth2 only over HTTP and not with basic auth, SASL EXTERNAL, ...), one place.
        values = self.keda_values()
        if not self.username and urlsplit(self.host).username:
            values["username"], values["password"] = self.credentials or ("", "")
        self._auth = rabbitmq_auth(values)
        http_only = "needs the management API: an http:// or https:// host"
        if self.use_regex and scheme_protocol != "http":
            raise ValueError(f"useRegex: {http_only}")
        if self.exclude_unacknowledged and scheme_protocol != "http":
            raise ValueError(f"excludeUnacknowledged: {http_only}")
        if self.queue_length is not None and (self.mode is not None or self.value is not None):
            raise ValueError("queueLength: is deprecated and cannot be combined with `mode`/`value`; use those")
        if self.queue_length is None and (self.mode is None) != (self.value is None):
            missing = "mode" if self.mode is None else "value"
            raise ValueError(f"{missing}: is required when `{'value' if missing == 'mode' else 'mode'}` is set")
        if self.measure_mode in RATE_MODES and scheme_protocol != "http":
            raise ValueError(f"mode: {self.measure_mode} {http_only}")
        return self

    # --- what the model resolves to ------------------------------------------------------------

    @property
    def measure_mode(self) -> Mode:
        return self.mode or "QueueLength"

    @property
    def target(self) -> float:
        if self.value is not None:
            return self.value
        return self.queue_length if self.queue_length is not None else DEFAULT_QUEUE_LENGTH

    @property
    def auth(self) -> RabbitMQAuth:
        return self._auth

    @property
    def uses_tls(self) -> bool:
        return urlsplit(self.host).scheme in ("amqps", "https") or self.tls == "enable"

    @property
    def uses_http(self) -> bool:
        return _SCHEMES[urlsplit(self.host).scheme] == "http"

    @property
    def credentials(self) -> tuple[str, str] | None:
        """`username`/`password` win over the URL's userinfo (as in KEDA)."""
        if self.username:
            return self.username, self.password.get_secret_value()
        parts = urlsplit(self.host)
        if parts.username:
            return unquote(parts.username), unquote(parts.password or "")
        return None

    @property
    def vhost(self) -> str:
        if self.vhost_name:
            return self.vhost_name
        path = urlsplit(self.host).path
        # AMQP: the whole path is the vhost. HTTP: the last segment is, anything before it is a path prefix.
        segment = path.rsplit("/", 1)[-1] if self.uses_http else path.removeprefix("/")
        return unquote(segment) or "/"

    @property
    def endpoint(self) -> str:
        """scheme://host:port (plus the management API's path prefix), never with userinfo."""
        parts = urlsplit(self.host)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        prefix = parts.path.rsplit("/", 1)[0] if self.uses_http else ""
        return f"{parts.scheme}://{host}:{parts.port or _DEFAULT_PORTS[parts.scheme]}{prefix}"

    def embedded_addresses(self) -> list[tuple[str, str]]:
        return self._auth.addresses()  # oauthTokenURI: the egress policy checks it like `host`

    def secrets(self) -> list[str]:
        found = super().secrets()
        password = urlsplit(self.host).password
        return [*found, unquote(password)] if password else found


class RabbitMQAdapter(Adapter[RabbitMQMetadata]):
    name = "rabbitmq"
    metadata_model = RabbitMQMetadata
    description = "Queue depth or message rates of a RabbitMQ queue (AMQP or the management API)"

    def __init__(self, context: AdapterContext) -> None:
        super().__init__(context)
        self.amqp = AmqpClients(context.resolve)
        self.pools.append(self.amqp.pool)

    async def close_idle(self, max_idle: float) -> int:
        closed = await super().close_idle(max_idle)
        self.amqp.forget_idle_targets()
        return closed

    def source_key(self, metadata: RabbitMQMetadata) -> SourceKey:
        user, password = metadata.credentials or ("", "")
        return SourceKey(
            adapter=self.name,
            endpoint=metadata.endpoint,
            object=metadata.queue_name,
            scope=(metadata.vhost,),  # its own field: vhost `a/b` + queue `c` is not vhost `a` + queue `b/c`
            mode=metadata.measure_mode,
            identity=credentials_identity(
                user, password, metadata.cert_file, metadata.key_file, metadata.auth.identity
            ),
            options=(
                ("regex", str(metadata.use_regex)),
                ("operation", metadata.operation if metadata.use_regex else ""),
                ("excludeUnacknowledged", str(metadata.exclude_unacknowledged)),
                ("verify", str(not metadata.unsafe_ssl)),
                ("caFile", metadata.ca_file),
                ("ca", credentials_identity(metadata.ca)),
                ("tls", metadata.tls),
            ),
        )

    def uses_ambient_credentials(self, metadata: RabbitMQMetadata) -> bool:
        # workloadIdentityResource: the management API token is the scaler pod's Azure workload identity.
        return any(provider.ambient for provider in metadata.auth.http_providers)

    def activation_source_key(self, metadata: RabbitMQMetadata) -> SourceKey | None:
        if metadata.measure_mode not in _OWN_ACTIVITY:
            return None
        # These modes' activity depends on activationValue, so it is its own reading.
        key = self.source_key(metadata)
        return dataclasses.replace(
            key,
            mode=f"{key.mode}/activity",
            options=(*key.options, ("activationValue", repr(metadata.activation_target))),
        )

    def metric_name_hint(self, metadata: RabbitMQMetadata) -> str:
        return metadata.queue_name

    def keda_metric_name(self, metadata: RabbitMQMetadata) -> str:
        return normalize_string(f"rabbitmq-{quote_plus(metadata.queue_name)}")  # KEDA's url.QueryEscape

    def timeout_seconds(self, metadata: RabbitMQMetadata) -> float | None:
        return metadata.timeout or None

    async def measure(self, metadata: RabbitMQMetadata) -> float:
        if not metadata.uses_http:
            target = self._amqp_target(metadata)
            return float(await self.amqp.message_count(target, metadata.queue_name, self._timeout(metadata)))
        return reading(await self._stats(metadata), metadata)

    async def measure_activation(self, metadata: RabbitMQMetadata) -> float:
        stats = await self._stats(metadata)
        value = reading(stats, metadata)
        # The engine calls a source active when the reading > activationValue; a reading just above it
        # says "active" for KEDA's extra rules (e.g. messages waiting and nobody consuming).
        return (
            metadata.activation_target + 1
            if is_active(stats, metadata) and value <= metadata.activation_target
            else value
        )

    def _timeout(self, metadata: RabbitMQMetadata) -> float:
        return self.timeout_seconds(metadata) or self.context.default_timeout

    def _amqp_target(self, metadata: RabbitMQMetadata) -> AmqpTarget:
        parts = urlsplit(metadata.host)
        auth = metadata.auth
        # SASL EXTERNAL: the broker takes the user from the client certificate; no password is sent.
        user, password = ("", "") if auth.sasl_external else metadata.credentials or ("guest", "guest")
        return AmqpTarget(
            host=parts.hostname or "",
            port=parts.port or _DEFAULT_PORTS[parts.scheme],
            tls=metadata.uses_tls,
            vhost=metadata.vhost,
            username=user,
            password=password,
            verify=not metadata.unsafe_ssl,
            ca_file=metadata.ca_file,
            cert_file=metadata.cert_file,
            key_file=metadata.key_file,
            external=auth.sasl_external,
            pem=self._pem(metadata),
        )

    @staticmethod
    def _pem(metadata: RabbitMQMetadata) -> TlsFiles:
        auth = metadata.auth
        if not auth.tls:
            return TlsFiles()
        return TlsFiles(ca_pem=auth.ca, cert_pem=auth.cert, key_pem=auth.key, key_password=auth.key_password)

    async def _stats(self, metadata: RabbitMQMetadata) -> QueueStats:
        pem = self._pem(metadata)
        query = ManagementQuery(
            base_url=metadata.endpoint,
            endpoint=HttpEndpoint.for_url(
                metadata.endpoint,
                verify=not metadata.unsafe_ssl,
                ca_file=metadata.ca_file or None,
                cert_file=metadata.cert_file or None,
                key_file=metadata.key_file or None,
                ca_pem=pem.ca_pem,
                cert_pem=pem.cert_pem,
                key_pem=pem.key_pem,
                key_password=pem.key_password,
            ),
            vhost=metadata.vhost,
            queue=metadata.queue_name,
            # OAuth2 or Azure workload identity replace basic auth (KEDA refuses both together).
            auth=None if metadata.auth.http_providers else metadata.credentials,
            timeout=self._timeout(metadata),
            providers=metadata.auth.http_providers,
        )
        if not metadata.use_regex:
            return await read_queue(self.context.http, query)
        return await read_matching(self.context.http, query, metadata.page_size, metadata.operation)


def reading(stats: QueueStats, metadata: RabbitMQMetadata) -> float:
    """The number KEDA's rabbitmq scaler reports for this mode."""
    messages = stats.ready if metadata.exclude_unacknowledged else stats.messages
    publish, deliver = stats.publish_rate, stats.deliver_get_rate
    mode = metadata.measure_mode
    if mode == "MessageRate":
        return publish
    if mode == "DeliverGetRate":
        return deliver
    if mode == "PublishedToDeliveredRatio":
        if publish > 0 and deliver == 0:
            return metadata.activation_target
        return publish / deliver if publish > 0 and deliver > 0 else 0.0
    if mode == "ExpectedQueueConsumptionTime":
        if messages == 0:
            return 0.0  # an empty queue drains in no time, even with nobody consuming (kedacore/keda#8033)
        if deliver == 0:
            return metadata.activation_target
        return (publish - deliver) / deliver + messages / deliver
    return messages


def is_active(stats: QueueStats, metadata: RabbitMQMetadata) -> bool:
    """KEDA's activity rule for this mode."""
    value, threshold = reading(stats, metadata), metadata.activation_target
    messages = stats.ready if metadata.exclude_unacknowledged else stats.messages
    mode = metadata.measure_mode
    if mode == "MessageRate":
        return value > threshold or messages > threshold
    if mode == "PublishedToDeliveredRatio":
        return value > threshold or (stats.publish_rate > 0 and stats.deliver_get_rate == 0)
    if mode == "ExpectedQueueConsumptionTime":
        return value > threshold or (stats.deliver_get_rate == 0 and messages > 0)
    return value > threshold
