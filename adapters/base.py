"""The Adapter base class: how one source turns trigger metadata into one number."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from .http import HttpClients
from .metadata import TriggerMetadata
from .pool import ClientPool
from .resolve import Resolve, system_resolve
from .sources import SourceKey

API_VERSION = 1
"""Bumped when the Adapter contract changes incompatibly; the registry refuses plugins built for another."""

M = TypeVar("M", bound=TriggerMetadata)


@dataclass
class AdapterContext:
    """What the engine hands every adapter: shared plumbing, so adapters never build their own."""

    http: HttpClients = field(default_factory=HttpClients)
    default_timeout: float = 5.0
    # The addresses a client may connect to for a host (the engine's egress hook): non-HTTP clients use
    # it as HttpClients does, so every connection goes to an address the egress policy approved.
    resolve: Resolve = system_resolve


class Adapter(ABC, Generic[M]):
    """One source. Instances are process-wide singletons holding the pooled clients for that source.

    Subclasses declare `name` and `metadata_model`, and implement `source_key()` and `measure()`.
    `measure()` returns a finite number >= 0, or raises an `adapters.errors` error.
    """

    name: ClassVar[str]
    metadata_model: ClassVar[type[TriggerMetadata]]
    description: ClassVar[str] = ""
    api_version: ClassVar[int] = API_VERSION

    def __init__(self, context: AdapterContext) -> None:
        self.context = context
        self.pools: list[ClientPool[Any, Any]] = []

    @abstractmethod
    def source_key(self, metadata: M) -> SourceKey:
        """What is measured: equal keys share one reading, one poller and one cache entry."""

    @abstractmethod
    async def measure(self, metadata: M) -> float:
        """Read the number now. Called at most once per source key per cache TTL."""

    def metric_name_hint(self, metadata: M) -> str:
        """A readable part for the metric name (e.g. the queue name); the engine sanitises and bounds it."""
        return self.source_key(metadata).object

    def keda_metric_name(self, metadata: M) -> str | None:
        """The metric name KEDA's built-in scaler gives the same trigger (without `s<i>-`), used verbatim so
        dashboards and alerts keep working after the move; None (plugins): the engine derives one."""
        return None

    def timeout_seconds(self, metadata: M) -> float | None:
        """A per-trigger timeout from metadata, if the adapter has one; else the engine's default."""
        return None

    def uses_ambient_credentials(self, metadata: M) -> bool:
        """True when the trigger gives no credentials and the adapter would use the scaler pod's own cloud
        identity (ADC, Workload Identity, IRSA, ...): the engine checks the namespace may do that."""
        return False

    def activation_source_key(self, metadata: M) -> SourceKey | None:
        """A cheaper, faster source for IsActive/StreamIsActive, if the adapter has one (e.g. a peek)."""
        return None

    async def measure_activation(self, metadata: M) -> float:
        """The reading for activation when `activation_source_key()` is not None."""
        return await self.measure(metadata)

    async def close_idle(self, max_idle: float) -> int:
        """Close pooled clients nobody used for `max_idle` seconds; returns how many were closed."""
        return sum([await pool.close_idle(max_idle) for pool in self.pools])

    async def close(self) -> None:
        """Close everything; called once at shutdown. Must be safe to call twice."""
        for pool in self.pools:
            await pool.close_all()
