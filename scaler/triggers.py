"""From a ScaledObjectRef's metadata to a Trigger: which adapter, which source, what target.

Parsing is cached by the metadata's content: KEDA sends the same map every poll, and thousands of
ScaledObjects should not be re-validated thousands of times per interval.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from adapters.api import (
    SECRETS,
    Adapter,
    AdapterError,
    AdapterRegistry,
    InvalidMetadata,
    SourceKey,
    SourcePermissionDenied,
    TriggerMetadata,
    parse_duration,
    parse_metadata,
    resolve_from_env,
)
from adapters.files import allowed_dirs, resolve_within

from .egress import Checked, EgressPolicy, parse_destination
from .settings import Connection

log = logging.getLogger(__name__)

# Keys the engine reads itself, or KEDA's own external-scaler keys; never "unknown".
ENGINE_KEYS = frozenset(
    {"adapter", "scalerAddress", "connection", "enableTLS", "unsafeSsl", "onSourceError", "maxStaleness"}
)
# Engine keys a trigger may set on top of a named connection: none of them changes where or how the
# connection's credentials travel (`scalerAddress` and `enableTLS` are KEDA's, for reaching this scaler).
ENGINE_KEYS_GRANTED = ENGINE_KEYS - {"unsafeSsl"}
_NAME_MAX = 60
_SLUG = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class Trigger:
    adapter: Adapter[Any]
    metadata: TriggerMetadata
    source_key: SourceKey
    activation_key: SourceKey
    metric_name: str
    target: float
    activation_target: float
    timeout: float
    on_source_error: Literal["fail", "lastKnown"]
    max_staleness: float
    ambient: bool  # no credentials given by the trigger or a connection: the scaler pod's own identity
    egress: EgressPolicy | None = None
    destinations: tuple[Checked, ...] = ()  # inline addresses that passed the literal egress check

    def measure(self) -> Callable[[], Awaitable[float]]:
        return self._guarded(self.adapter.measure)

    def measure_activation(self) -> Callable[[], Awaitable[float]]:
        if self.activation_key == self.source_key:
            return self.measure()
        return self._guarded(self.adapter.measure_activation)

    def _guarded(self, read: Callable[[Any], Awaitable[float]]) -> Callable[[], Awaitable[float]]:
        metadata, egress, destinations = self.metadata, self.egress, self.destinations

        async def measure() -> float:
            if egress is None or not destinations:
                return await read(metadata)
            # Inside the cached/coalesced query: each host is resolved once when a client first connects to
            # it, the answer checked, and the reading's clients connect to those approved addresses only.
            with egress.pinned(destinations):
                return await read(metadata)

        return measure


def metric_name(adapter: str, hint: str, key: SourceKey) -> str:
    """`<adapter>-<hint>`: lower-case letters, digits and '-', bounded, with a digest when the hint is lossy."""
    slug = _SLUG.sub("-", hint.lower()).strip("-")
    digest = hashlib.sha256(f"{key.endpoint}\x00{key.object}\x00{key.mode}\x00{key.options}".encode()).hexdigest()[:8]
    base = _SLUG.sub("-", adapter.lower()).strip("-") or "adapter"
    if not slug:
        return f"{base}-{digest}"
    name = f"{base}-{slug}"
    if len(name) > _NAME_MAX or slug != hint:
        name = f"{name[: _NAME_MAX - 9].rstrip('-')}-{digest}"
    return name


class TriggerParser:
    """Metadata -> Trigger, in the order that keeps tenants apart.

    Per call, before anything is parsed or cached: the size limit, then whether this namespace may use the
    named connection at all. Then the parse (cached by a digest of the metadata, bounded in entries and
    bytes), then whether this namespace may use the scaler's own cloud identity.
    """

    def __init__(
        self,
        registry: AdapterRegistry,
        connections: Mapping[str, tuple[Connection, dict[str, str]]],
        default_timeout: float,
        cache_size: int,
        egress: EgressPolicy | None = None,
        *,
        max_metadata_bytes: int = 64 * 1024,
        cache_bytes: int = 64 * 1024 * 1024,
        ambient_namespaces: Collection[str] | None = None,
        file_dirs: Sequence[str] = (),
    ) -> None:
        self.egress = egress or EgressPolicy()
        self.file_dirs = allowed_dirs(file_dirs)
        self.registry = registry
        self.connections = connections
        self.default_timeout = default_timeout
        self.cache_size = cache_size
        self.cache_bytes = cache_bytes
        self.max_metadata_bytes = max_metadata_bytes
        self.ambient_namespaces = frozenset(ambient_namespaces) if ambient_namespaces is not None else None
        self._cache: OrderedDict[frozenset[tuple[str, str]], tuple[int, Trigger | AdapterError]] = OrderedDict()
        self._cached_bytes = 0

    def parse(self, metadata: Mapping[str, str], namespace: str = "") -> Trigger:
        metadata, size = copy_within(metadata, self.max_metadata_bytes)
        if size > self.max_metadata_bytes:
            raise InvalidMetadata(
                "",
                f"trigger metadata is {size} bytes, more than the scaler's limit of {self.max_metadata_bytes} "
                "bytes (max_metadata_bytes)",
            )
        self._check_connection_access(metadata, namespace)
        cached = self._cached(metadata, size)
        if isinstance(cached, AdapterError):
            raise cached.with_traceback(None)
        if cached.ambient and self.ambient_namespaces is not None and namespace not in self.ambient_namespaces:
            raise SourcePermissionDenied(
                f"the trigger gives no credentials, and namespace '{namespace}' may not use the scaler's own "
                f"{cached.adapter.name} identity (ambient_credentials_namespaces); use a named connection"
            )
        return cached

    def _check_connection_access(self, metadata: Mapping[str, str], namespace: str) -> None:
        # First, and the same answer whether the connection is unknown or forbidden here: a refusal must not
        # tell one tenant which connections exist, who may use them, or what is wrong with their settings.
        # resolve_from_env's rule for this one key, without building its dicts on every call: a literal
        # non-blank `connection` wins over `connectionFromEnv`.
        name = metadata.get("connection", "").strip() or metadata.get("connectionFromEnv", "").strip()
        if not name:
            return
        found = self.connections.get(name)
        allowed = found is not None and (found[0].namespaces is None or namespace in found[0].namespaces)
        if not allowed:
            raise SourcePermissionDenied(
                f"metadata key 'connection': there is no connection '{name[:60]}' that namespace '{namespace}' may use"
            )

    def _cached(self, metadata: Mapping[str, str], size: int) -> Trigger | AdapterError:
        # The items themselves are the key: a dict lookup compares them exactly on a hash match, so no two
        # tenants' metadata can share an entry, and it is cheaper than the sorted, joined sha256 digest it
        # replaces (every call).
        key = frozenset(metadata.items())
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit[1]
        try:
            parsed: Trigger | AdapterError = self._parse(metadata)
        except AdapterError as error:
            parsed = error
        self._cache[key] = (size, parsed)
        self._cached_bytes += size
        while len(self._cache) > self.cache_size or self._cached_bytes > self.cache_bytes:
            _, (old_size, _) = self._cache.popitem(last=False)
            self._cached_bytes -= old_size
        return parsed

    def _parse(self, raw: Mapping[str, str]) -> Trigger:
        values = resolve_from_env(raw)
        adapter_name = values.get("adapter", "").strip()
        if not adapter_name:
            raise InvalidMetadata("adapter", f"is required; registered adapters: {', '.join(self.registry.names())}")
        adapter = self.registry.get(adapter_name)
        if adapter is None:
            raise InvalidMetadata(
                "adapter",
                f"unknown adapter '{adapter_name[:60]}'; registered adapters: {', '.join(self.registry.names())}",
            )
        fixed: frozenset[str] = frozenset()
        connection_name = values.get("connection", "").strip()
        if connection_name:
            values, fixed = self._apply_connection(connection_name, adapter, values)
        values = self._confine_paths(adapter.metadata_model, values, fixed)
        # Addresses the trigger itself gives (not its named connection's) go through the egress policy.
        inline = [key for key in adapter.metadata_model.address_keys if key in values and key not in fixed]
        self.egress.check_inline(adapter_name, inline)
        metadata = parse_metadata(adapter.metadata_model, values)
        addresses = [(key, values[key]) for key in inline]
        addresses += [(key, url) for key, url in metadata.embedded_addresses() if key not in fixed]
        destinations = tuple(self.egress.check(parse_destination(key, url)) for key, url in addresses)
        # Only now, when the metadata is valid: secrets of refused triggers would grow the registry (and the
        # cost of every redaction) for nothing, and are never used.
        SECRETS.add(*metadata.secrets())
        unknown = sorted(set(values) - set(adapter.metadata_model.keys()) - ENGINE_KEYS)
        if unknown:
            log.warning(
                "ignoring metadata keys the %s adapter does not know: %s",
                adapter_name,
                ", ".join(key[:60] for key in unknown[:20]),
                extra={"adapter": adapter_name},
            )
        source = adapter.source_key(metadata)
        on_error = values.get("onSourceError", "fail")
        if on_error not in ("fail", "lastKnown"):
            raise InvalidMetadata("onSourceError", f"must be 'fail' or 'lastKnown', got {on_error[:40]!r}")
        try:
            max_staleness = parse_duration(values.get("maxStaleness", "5m"))
        except ValueError as exc:
            raise InvalidMetadata("maxStaleness", str(exc)) from None
        return Trigger(
            adapter=adapter,
            metadata=metadata,
            source_key=source,
            activation_key=adapter.activation_source_key(metadata) or source,
            metric_name=adapter.keda_metric_name(metadata)
            or metric_name(adapter_name, adapter.metric_name_hint(metadata), source),
            target=metadata.target,
            activation_target=metadata.activation_target,
            timeout=adapter.timeout_seconds(metadata) or self.default_timeout,
            on_source_error="lastKnown" if on_error == "lastKnown" else "fail",
            max_staleness=max_staleness,
            # A named connection is the operator's grant, whatever credentials it carries (or not).
            ambient=not connection_name and adapter.uses_ambient_credentials(metadata),
            egress=self.egress,
            destinations=destinations,
        )

    def _confine_paths(
        self, model: type[TriggerMetadata], values: dict[str, str], fixed: frozenset[str]
    ) -> dict[str, str]:
        """Paths the trigger gives itself must lie in `trigger_file_dirs` (a connection's are the operator's).

        The refusal is the same whether or not the file exists; allowed paths come back normalised, so
        spellings of one file share one pooled client.
        """
        confined = dict(values)
        for key in model.path_keys:
            path = values.get(key, "").strip()
            if not path or key in fixed:
                continue
            resolved = resolve_within(path, self.file_dirs)
            if resolved is None:
                where = "outside the directories the operator allows" if self.file_dirs else "not allowed here"
                raise SourcePermissionDenied(
                    f"metadata key '{key}': files named in trigger metadata are {where} "
                    "(trigger_file_dirs); use a named connection"
                )
            confined[key] = resolved
        for key in model.env_path_keys:
            # The variable is the operator's, but a tenant choosing it chooses among the operator's files (one
            # may hold another team's key): the file it names must lie in trigger_file_dirs too. Unset or
            # outside give the same answer, so a tenant cannot probe the scaler's environment.
            variable = values.get(key, "").strip()
            if not variable or key in fixed:
                continue
            if resolve_within(os.environ.get(variable, "").strip(), self.file_dirs) is None:
                raise SourcePermissionDenied(
                    f"metadata key '{key}': the file it names is not one trigger metadata may use "
                    "(trigger_file_dirs); use a named connection"
                )
        return confined

    def _apply_connection(
        self, name: str, adapter: Adapter[Any], values: dict[str, str]
    ) -> tuple[dict[str, str], frozenset[str]]:
        connection, fixed = self.connections[name]  # access was checked before parsing
        if connection.adapter != adapter.name:
            raise InvalidMetadata(
                "connection", f"connection '{name}' is for adapter '{connection.adapter}', not '{adapter.name}'"
            )
        # A connection grants its credentials for the object a trigger names, nothing more: any key that
        # could change where or how those credentials travel (address, headers, parameters, TLS, auth) is
        # the operator's to set, unless the connection lists it in triggerKeys.
        grantable = adapter.metadata_model.grantable_keys() | set(connection.trigger_keys) | ENGINE_KEYS_GRANTED
        for key in sorted(values):
            if key in grantable or key in fixed or _is_no_op(key, values[key]):
                continue
            raise SourcePermissionDenied(
                f"metadata key '{key[:60]}' may not be set by a trigger using connection '{name}': it is the "
                "connection's to set (the operator may allow it with the connection's triggerKeys)"
            )
        # The connection owns its endpoint and credentials: a trigger may not override them.
        clash = sorted(set(fixed) & set(values))
        if clash:
            raise SourcePermissionDenied(
                f"metadata key '{clash[0][:60]}' is set by connection '{name}' and may not be given in the trigger"
            )
        return {**values, **fixed}, frozenset(fixed)


def copy_within(metadata: Mapping[str, str], limit: int) -> tuple[dict[str, str], int]:
    """A dict copy of the (protobuf) map and its size in UTF-8 bytes; the copy stops growing past `limit`.

    One pass: iterating a protobuf map costs several times a dict's, and the connection check and the cache
    key read the copy again (every call). Past the limit only the size is counted, so a hostile map of many
    small entries is never held whole (held at once, it would grow the heap for good).
    """
    copy: dict[str, str] = {}
    size = 0
    for key, value in metadata.items():
        size += len(key) + len(value)
        if not (key.isascii() and value.isascii()):
            size += len(key.encode()) + len(value.encode()) - len(key) - len(value)
        if size <= limit:
            copy[key] = value
    return copy, size


def _is_no_op(key: str, value: str) -> bool:
    # `unsafeSsl` is also KEDA's own key for its TLS connection to this scaler; `false` changes nothing here.
    return key == "unsafeSsl" and value.strip().lower() in ("false", "0", "f")
