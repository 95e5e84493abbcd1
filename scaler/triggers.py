"""From a ScaledObjectRef's metadata to a Trigger: which adapter, which source, what target.

Parsing is cached by the metadata's content: KEDA sends the same map every poll, and thousands of
ScaledObjects should not be re-validated thousands of times per interval.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
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

from .egress import Checked, EgressPolicy, parse_destination
from .settings import Connection

log = logging.getLogger(__name__)

# Keys the engine reads itself, or KEDA's own external-scaler keys; never "unknown".
ENGINE_KEYS = frozenset(
    {"adapter", "scalerAddress", "connection", "enableTLS", "unsafeSsl", "onSourceError", "maxStaleness"}
)
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
    namespaces: frozenset[str] | None  # from a named connection: who may use it
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
            # Inside the cached/coalesced query, right before connecting: each host is resolved once, the
            # answer checked, and the reading's clients connect to those approved addresses only.
            with egress.pinned(await egress.approve(destinations)):
                return await read(metadata)

        return measure

    def check_namespace(self, namespace: str) -> None:
        if self.namespaces is not None and namespace not in self.namespaces:
            raise SourcePermissionDenied(
                f"namespace '{namespace}' may not use this named connection "
                f"(allowed: {', '.join(sorted(self.namespaces))})"
            )


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
    def __init__(
        self,
        registry: AdapterRegistry,
        connections: Mapping[str, tuple[Connection, dict[str, str]]],
        default_timeout: float,
        cache_size: int,
        egress: EgressPolicy | None = None,
    ) -> None:
        self.egress = egress or EgressPolicy()
        self.registry = registry
        self.connections = connections
        self.default_timeout = default_timeout
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[tuple[str, str], ...], Trigger | AdapterError] = OrderedDict()

    def parse(self, metadata: Mapping[str, str]) -> Trigger:
        cache_key = tuple(sorted(metadata.items()))
        cached = self._cache.get(cache_key)
        if cached is None:
            try:
                cached = self._parse(metadata)
            except AdapterError as error:
                cached = error
            self._cache[cache_key] = cached
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(cache_key)
        if isinstance(cached, AdapterError):
            raise cached.with_traceback(None)
        return cached

    def _parse(self, raw: Mapping[str, str]) -> Trigger:
        values = resolve_from_env(raw)
        for key in ("password", "bearerToken", "customAuthValue", "token"):
            if values.get(key):
                SECRETS.add(values[key])
        adapter_name = values.get("adapter", "").strip()
        if not adapter_name:
            raise InvalidMetadata("adapter", f"is required; registered adapters: {', '.join(self.registry.names())}")
        adapter = self.registry.get(adapter_name)
        if adapter is None:
            raise InvalidMetadata(
                "adapter",
                f"unknown adapter '{adapter_name[:60]}'; registered adapters: {', '.join(self.registry.names())}",
            )
        namespaces: frozenset[str] | None = None
        fixed: frozenset[str] = frozenset()
        connection_name = values.get("connection", "").strip()
        if connection_name:
            values, namespaces, fixed = self._apply_connection(connection_name, adapter_name, values)
        # Addresses the trigger itself gives (not its named connection's) go through the egress policy.
        inline = [key for key in adapter.metadata_model.address_keys if key in values and key not in fixed]
        self.egress.check_inline(adapter_name, inline)
        metadata = parse_metadata(adapter.metadata_model, values)
        addresses = [(key, values[key]) for key in inline]
        addresses += [(key, url) for key, url in metadata.embedded_addresses() if key not in fixed]
        destinations = tuple(self.egress.check(parse_destination(key, url)) for key, url in addresses)
        SECRETS.add(*metadata.secrets())
        unknown = sorted(set(values) - set(adapter.metadata_model.keys()) - ENGINE_KEYS)
        if unknown:
            log.warning(
                "ignoring metadata keys the %s adapter does not know: %s",
                adapter_name,
                ", ".join(unknown),
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
            metric_name=metric_name(adapter_name, adapter.metric_name_hint(metadata), source),
            target=metadata.target,
            activation_target=metadata.activation_target,
            timeout=adapter.timeout_seconds(metadata) or self.default_timeout,
            on_source_error="lastKnown" if on_error == "lastKnown" else "fail",
            max_staleness=max_staleness,
            namespaces=namespaces,
            egress=self.egress,
            destinations=destinations,
        )

    def _apply_connection(
        self, name: str, adapter_name: str, values: dict[str, str]
    ) -> tuple[dict[str, str], frozenset[str] | None, frozenset[str]]:
        found = self.connections.get(name)
        if found is None:
            known = ", ".join(sorted(self.connections)) or "none are configured"
            raise InvalidMetadata("connection", f"unknown connection '{name[:60]}'; defined: {known}")
        connection, fixed = found
        if connection.adapter != adapter_name:
            raise InvalidMetadata(
                "connection", f"connection '{name}' is for adapter '{connection.adapter}', not '{adapter_name}'"
            )
        # The connection owns its endpoint and credentials: a trigger may not override them (or the
        # egress policy and namespace limits could be sidestepped).
        clash = sorted(set(fixed) & set(values))
        if clash:
            raise InvalidMetadata(clash[0], f"is set by connection '{name}' and may not be given in the trigger")
        namespaces = frozenset(connection.namespaces) if connection.namespaces is not None else None
        return {**values, **fixed}, namespaces, frozenset(fixed)
