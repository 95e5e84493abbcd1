"""Find adapters through the `scaler.adapters` entry point group: built-ins and plugins register alike."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points
from typing import Any

from .base import API_VERSION, Adapter, AdapterContext
from .metadata import TriggerMetadata
from .pool import ClientPool

ENTRY_POINT_GROUP = "scaler.adapters"
log = logging.getLogger(__name__)


class AdapterLoadError(Exception):
    """An installed adapter cannot be used (import failure, wrong API version, malformed class)."""


def check_adapter_class(cls: Any, origin: str) -> type[Adapter[Any]]:
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise AdapterLoadError(f"{origin} is not a subclass of adapters.api.Adapter")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise AdapterLoadError(f"{origin} has no `name`")
    # First: a plugin built for another API version may not have the shape the checks below expect.
    if cls.api_version != API_VERSION:
        raise AdapterLoadError(
            f"adapter '{name}' ({origin}) was built for adapter API version {cls.api_version}, "
            f"this scaler provides version {API_VERSION}; upgrade the plugin or the scaler"
        )
    model = getattr(cls, "metadata_model", None)
    if not (isinstance(model, type) and issubclass(model, TriggerMetadata)):
        raise AdapterLoadError(f"adapter '{name}' ({origin}) has no `metadata_model` subclassing TriggerMetadata")
    keys = set(model.keys())
    for role in ("target_key", "activation_key"):
        key = getattr(model, role)
        if key not in keys:
            raise AdapterLoadError(
                f"adapter '{name}' ({origin}): {model.__name__}.{role} is '{key}', which is not one of its keys"
            )
    return cls


def discover_adapter_classes() -> dict[str, type[Adapter[Any]]]:
    """Every installed adapter class by name. A broken plugin is logged and skipped, not fatal."""
    found: dict[str, type[Adapter[Any]]] = {}
    # Built-ins first, so a plugin can never take a built-in adapter's name, whatever its entry point is called.
    builtin = __name__.split(".")[0]
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.module.split(".")[0] != builtin, e.name)):
        origin = f"entry point '{ep.name}' = {ep.value}"
        try:
            cls = check_adapter_class(ep.load(), origin)
        except AdapterLoadError as exc:
            log.error("adapter not loaded: %s", exc)
            continue
        except Exception as exc:
            log.error("adapter not loaded: %s failed to import: %s: %s", origin, type(exc).__name__, exc)
            continue
        if cls.name in found and found[cls.name] is not cls:
            log.error("adapter not loaded: %s: name '%s' is already taken", origin, cls.name)
            continue
        found[cls.name] = cls
    return found


class AdapterRegistry:
    """The adapters of one running server: one instance each, sharing one AdapterContext."""

    def __init__(self, context: AdapterContext, classes: dict[str, type[Adapter[Any]]] | None = None) -> None:
        self.context = context
        classes = discover_adapter_classes() if classes is None else classes
        self._adapters: dict[str, Adapter[Any]] = {name: cls(context) for name, cls in classes.items()}

    def __contains__(self, name: object) -> bool:
        return name in self._adapters

    def get(self, name: str) -> Adapter[Any] | None:
        return self._adapters.get(name)

    def names(self) -> list[str]:
        return sorted(self._adapters)

    def all(self) -> list[Adapter[Any]]:
        return [self._adapters[n] for n in self.names()]

    def pools(self) -> dict[str, ClientPool[Any, Any]]:
        """Every client pool by a label-safe name: `http` (shared) and `<adapter>-<pool>`."""
        pools: dict[str, ClientPool[Any, Any]] = {"http": self.context.http.pool}
        for adapter in self._adapters.values():
            for pool in adapter.pools:
                pools[f"{adapter.name}-{pool.name}"] = pool
        return pools

    async def close_idle(self, max_idle: float) -> int:
        closed = 0
        for adapter in self._adapters.values():
            closed += await adapter.close_idle(max_idle)
        closed += await self.context.http.pool.close_idle(max_idle)
        return closed

    async def close(self) -> None:
        for adapter in self._adapters.values():
            try:
                await adapter.close()
            except Exception as exc:
                log.warning("closing adapter %s failed: %s", adapter.name, type(exc).__name__)
        await self.context.http.pool.close_all()
