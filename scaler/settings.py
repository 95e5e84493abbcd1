"""Server settings, 12-factor: command-line flags > SCALER_* environment variables > YAML file > defaults.

Named connections live here too: endpoints and credentials from the scaler's own pod (files or env vars),
referenced by trigger metadata as `connection: <name>`, so no secret has to sit in a ScaledObject.
"""

from __future__ import annotations

import json
import os
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

from adapters.api import SECRETS

if TYPE_CHECKING:
    import yaml

ENV_PREFIX = "SCALER_"


class SettingsError(Exception):
    """The configuration cannot be used; the message names the setting."""


class Connection(BaseModel):
    """A named connection: metadata defaults for one adapter, with secrets read from files or env vars."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    adapter: str = Field(description="The adapter this connection is for, e.g. rabbitmq")
    metadata: dict[str, str] = Field(default_factory=dict, description="Metadata keys the connection fixes")
    from_file: dict[str, str] = Field(
        default_factory=dict, alias="fromFile", description="Metadata key -> file whose content is the value"
    )
    from_env: dict[str, str] = Field(
        default_factory=dict, alias="fromEnv", description="Metadata key -> env var of the scaler's pod"
    )
    namespaces: list[str] | None = Field(
        None, description="Only ScaledObjects in these namespaces may use it (default: any)"
    )
    trigger_keys: list[str] = Field(
        default_factory=list,
        alias="triggerKeys",
        description="Metadata keys a trigger may add beyond the adapter's object and target keys "
        "(default: none; docs/SECURITY.md)",
    )

    def resolve(self, name: str) -> dict[str, str]:
        """The metadata this connection contributes; values from files and env vars are registered as secrets."""
        values = dict(self.metadata)
        for key, path in self.from_file.items():
            try:
                values[key] = Path(path).read_text().strip()
            except OSError as exc:
                raise SettingsError(
                    f"connection '{name}': cannot read the file for '{key}' ({path}): {exc.strerror}"
                ) from None
            SECRETS.add(values[key])
        for key, var in self.from_env.items():
            value = os.environ.get(var)
            if not value:
                raise SettingsError(f"connection '{name}': environment variable {var} for '{key}' is unset or empty")
            values[key] = value
            SECRETS.add(value)
        return values


class Settings(BaseSettings):
    """Every setting of the server. The README's table is generated from this class."""

    # defer_build: only `_Layered` below validates; Settings itself is filled by model_construct, so building
    # its validator at import would cost start-up time (issue 18) for nothing.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True, defer_build=True)

    grpc_address: str = Field("0.0.0.0:9090", description="gRPC listen address (KEDA's `scalerAddress` points here)")
    http_address: str = Field("0.0.0.0:8080", description="HTTP listen address for /metrics, /healthz and /readyz")
    # 5 s, not 1 s: at 10 ScaledObjects per source polled like KEDA (1.3 calls/s per source) a 1 s TTL still
    # queried each source on ~40% of calls, and the queries were most of the scaler's CPU. KEDA's own side
    # of it: its HPA reads every 15 s and it polls activity every 30 s, so a reading up to 5 s old is at
    # most a third of one HPA sync older; a polled (not pushed) activation can wait 30 + 5 s instead of
    # 30 s; push streams are unaffected (their pollers refresh every push_interval whatever the TTL); a
    # failure is reported (and KEDA's fallback counts it) at most 5 s later, and failures themselves are
    # reused only error_cache_ttl. KEDA's own `useCachedMetrics` reuses a reading for a whole polling interval.
    cache_ttl: float = Field(5.0, gt=0, description="Seconds a reading is reused for every ScaledObject on that source")
    error_cache_ttl: float = Field(
        1.0, ge=0, description="Seconds a failed reading is reused, so a dead source is not hammered"
    )
    push_interval: float = Field(1.0, gt=0, description="Seconds between polls of a source watched by StreamIsActive")
    source_timeout: float = Field(
        5.0, gt=0, description="Default seconds a source query may take (DEADLINE_EXCEEDED after)"
    )
    max_source_timeout: float = Field(
        10.0,
        gt=0,
        description="Most seconds any source query may take, whatever a trigger's `timeout` asks (capped, logged once)",
    )
    max_source_queries_per_namespace: int = Field(
        2,
        ge=1,
        description="Source queries one namespace may have in flight per origin (of its 16 pooled connections); "
        "more wait up to their timeout, then RESOURCE_EXHAUSTED",
    )
    max_pollers_per_namespace: int = Field(
        100, ge=1, description="Sources one namespace may watch with StreamIsActive (RESOURCE_EXHAUSTED beyond)"
    )
    shutdown_grace: float = Field(10.0, ge=0, description="Seconds in-flight calls get to finish on SIGTERM")
    max_connection_age: float = Field(
        60.0,
        ge=0,
        description="Seconds before the server asks a client to reconnect (GOAWAY) and ends a push stream with OK, "
        "so KEDA re-resolves and spreads calls over replicas added since; 0: never",
    )
    series_ttl: float = Field(
        120.0, gt=0, description="Seconds after a ScaledObject's last call before its /metrics series are removed"
    )
    status_page: bool = Field(
        True, description="Serve /status (HTML) and /status.json on the HTTP port: what every ScaledObject reads"
    )
    status_max_rows: int = Field(
        5000, ge=1, le=100_000, description="Triggers the status page keeps (more are counted, not shown)"
    )
    idle_timeout: float = Field(
        300.0, gt=0, description="Seconds before an unused cache entry, poller or pooled connection is closed"
    )
    metadata_cache_size: int = Field(10000, ge=1, description="Parsed trigger configurations kept, by metadata content")
    max_metadata_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=4 * 1024 * 1024,
        description="Largest trigger metadata accepted (keys + values, UTF-8 bytes); larger is INVALID_ARGUMENT",
    )
    metadata_cache_bytes: int = Field(
        64 * 1024 * 1024, ge=1024 * 1024, description="Bytes of metadata the parsed-trigger cache may hold"
    )
    ambient_credentials_namespaces: Annotated[list[str] | None, NoDecode] = Field(
        None,
        description="Namespaces whose triggers may use the scaler pod's own cloud identity (ADC, Workload "
        "Identity) when they give no credentials. Unset: any, as KEDA; [] : none",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level")
    log_format: Literal["json", "text"] = Field("json", description="json (one object per line) or text")
    tls_cert_file: str = Field("", description="Server certificate (PEM); with tls_key_file turns gRPC TLS on")
    tls_key_file: str = Field("", description="Server private key (PEM)")
    tls_client_ca_file: str = Field(
        "", description="CA for client certificates; when set, clients must present one (mTLS)"
    )
    egress_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Where trigger metadata may point: hosts (`*.svc` wildcards), CIDRs, URL prefixes, "
        "comma-separated. Empty: anywhere but link-local and metadata servers (docs/SECURITY.md)",
    )
    auth_cloud_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts that may receive cloud credentials (Google, AWS, Azure: the pod's own or a connection's) "
        "besides the clouds' managed Prometheus endpoints, e.g. a proxy; comma-separated",
    )
    allow_inline_addresses: bool = Field(
        True, description="When false, triggers may not set a source address themselves: only named connections"
    )
    egress_resolve_timeout: float = Field(
        2.0, gt=0, description="Seconds the egress check may spend resolving a host name (UNAVAILABLE after)"
    )
    trigger_file_dirs: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Directories whose files trigger metadata may name (`caFile`, `credentialsFile`, ...), "
        "comma-separated. Empty: triggers may name no file; named connections may (docs/SECURITY.md)",
    )
    egress_nameservers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="DNS servers (`ip[:port]`, comma-separated) that resolve the hosts of HTTP and AMQP sources "
        "and the egress check instead of the system resolver (no hosts file, no search domains). "
        "Empty: the system resolver",
    )
    config: str = Field("", description="Path of an optional YAML file with any of these settings (SCALER_CONFIG)")
    connections: dict[str, Connection] = Field(
        default_factory=dict, description="Named connections (YAML file or JSON in SCALER_CONNECTIONS)"
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator(
        "egress_allow",
        "ambient_credentials_namespaces",
        "trigger_file_dirs",
        "egress_nameservers",
        "auth_cloud_hosts",
        mode="before",
    )
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        # Flags and env vars give one string: a JSON list or comma-separated entries.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except json.JSONDecodeError:
                    raise ValueError("is not a valid JSON list; give a JSON list or comma-separated entries") from None
            return [item.strip() for item in text.split(",") if item.strip()]
        return value

    @field_validator("egress_allow")
    @classmethod
    def _check_egress(cls, value: list[str]) -> list[str]:
        from .egress import parse_rule  # egress imports nothing from settings; this keeps the import one-way

        for entry in value:
            parse_rule(entry)
        return value

    @field_validator("trigger_file_dirs")
    @classmethod
    def _check_dirs(cls, value: list[str]) -> list[str]:
        for entry in value:
            if not entry.startswith("/") or ".." in entry.split("/"):
                raise ValueError(f"'{entry[:100]}' must be an absolute path without '..'")
        return value

    @field_validator("egress_nameservers")
    @classmethod
    def _check_nameservers(cls, value: list[str]) -> list[str]:
        from .nameservers import parse_nameserver

        for entry in value:
            parse_nameserver(entry)
        return value

    @model_validator(mode="after")
    def _check_timeouts(self) -> Settings:
        if self.source_timeout > self.max_source_timeout:
            raise ValueError(
                f"source_timeout ({self.source_timeout:g}) may not exceed "
                f"max_source_timeout ({self.max_source_timeout:g})"
            )
        return self

    @model_validator(mode="after")
    def _check_tls(self) -> Settings:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file must be given together")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file (mTLS is TLS plus client certs)")
        return self

    @field_validator("grpc_address", "http_address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be host:port, e.g. 0.0.0.0:9090")
        return value

    def resolved_connections(self) -> dict[str, tuple[Connection, dict[str, str]]]:
        return {name: (conn, conn.resolve(name)) for name, conn in self.connections.items()}


def _read_yaml(path: str) -> dict[str, Any]:
    import yaml  # only with a config file: PyYAML's import is ~15 ms of start-up

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise SettingsError(f"config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"config file {path} is not valid YAML: {_yaml_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path} must hold a mapping of settings")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _yaml_problem(exc: yaml.YAMLError) -> str:
    import yaml

    # Only the problem and where it is: PyYAML's own message quotes the offending line, which may hold a password.
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem or 'syntax error'} at line {mark.line + 1}, column {mark.column + 1}"
    return type(exc).__name__


class _FileSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], values: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self.values = values

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.values)


_FILE_VALUES: ContextVar[dict[str, Any]] = ContextVar("_FILE_VALUES")


class _Layered(Settings):
    """Settings with the YAML file as the lowest source. One class for every load (a class per call would build
    a pydantic validator each time); the file's values travel in a context variable."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _FileSource(settings_cls, _FILE_VALUES.get())


def load_settings(flags: dict[str, Any] | None = None) -> Settings:
    """Build settings from flags (highest), the environment, then the YAML file named by flag or SCALER_CONFIG."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    path = flags.get("config") or os.environ.get(f"{ENV_PREFIX}CONFIG", "")
    token = _FILE_VALUES.set(_read_yaml(path) if path else {})
    try:
        layered = _Layered(**flags)
    except PydanticSettingsError as exc:
        # e.g. SCALER_CONNECTIONS is not valid JSON; the message names the field, never the value.
        raise SettingsError(f"settings: {exc}") from None
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "settings"
        raise SettingsError(f"setting '{where}': {err['msg']}") from None
    finally:
        _FILE_VALUES.reset(token)
    return Settings.model_construct(**{name: getattr(layered, name) for name in Settings.model_fields})


def settings_table() -> str:
    """The README's settings table, generated from the model so it cannot drift."""
    rows = ["| setting | flag | environment | default | description |", "|---|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "" if default in ("", {}, [], None) else f"`{default}`"
        rows.append(f"| `{name}` | {_flag(name)} | `{ENV_PREFIX}{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows)


def _flag(name: str) -> str:
    return "(file or env)" if name == "connections" else f"`--{name.replace('_', '-')}`"
