"""Read ScaledObject / ScaledJob manifests (multi-document YAML files or stdin) into what `scaler check` needs.

Every problem becomes a ManifestError naming the file, the document (1-based, as an editor counts) and
the field path, e.g. `so.yaml, document 2: spec.triggers[0].metadata: is required`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from ..replicas import DEFAULT_MAX_REPLICAS, Bounds, MetricType
from .crd import Schemas, built_in

API_VERSION = "keda.sh/v1alpha1"
EXTERNAL_TYPES = ("external", "external-push")
FROM_ENV_SUFFIX = "FromEnv"
Kind = Literal["ScaledObject", "ScaledJob"]


class ManifestError(Exception):
    """A manifest KEDA would refuse (or that this command cannot read); the message names where."""


@dataclass(frozen=True)
class TriggerSpec:
    index: int
    type: str
    name: str
    metadata: Mapping[str, str]  # as KEDA sends it: `xFromEnv` resolved from this shell's environment
    metric_type: MetricType

    @property
    def external(self) -> bool:
        return self.type in EXTERNAL_TYPES

    @property
    def push(self) -> bool:
        return self.type == "external-push"

    @property
    def label(self) -> str:
        return f"{self.index} {self.name}" if self.name else str(self.index)


@dataclass(frozen=True)
class ScaledResource:
    kind: Kind
    name: str
    namespace: str
    bounds: Bounds
    triggers: tuple[TriggerSpec, ...]
    source: str  # "<file>, document <n>", for messages

    @property
    def title(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def read_manifests(paths: Iterable[str], *, need_address: bool, schemas: Schemas | None = None) -> list[ScaledResource]:
    """Every ScaledObject / ScaledJob in `paths` ('-' is stdin), in order; raises ManifestError on the first problem.

    `need_address`: external triggers must carry `scalerAddress` (no --address / --local given).
    `schemas`: KEDA's CRD schemas to check against (crd.load_schemas); the built-in subset by default.
    """
    schemas = schemas or built_in()
    resources: list[ScaledResource] = []
    for path in paths:
        name = "<stdin>" if path == "-" else path
        for number, document in _documents(path, name):
            if document is not None:
                resources.append(_resource(document, f"{name}, document {number}", need_address, schemas))
    if not resources:
        raise ManifestError("no ScaledObject or ScaledJob found in the input")
    return resources


def _documents(path: str, name: str) -> Iterable[tuple[int, Any]]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"{name}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ManifestError(f"{name}: not UTF-8 text") from None
    number = 0
    try:
        for number, document in enumerate(yaml.load_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)), 1):
            yield number, document
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ManifestError(f"{name}, document {number + 1}: not valid YAML{where}: {problem}") from None


def _resource(document: Any, source: str, need_address: bool, schemas: Schemas) -> ScaledResource:
    if not isinstance(document, dict):
        raise ManifestError(f"{source}: expected a Kubernetes object (a mapping), got {type(document).__name__}")
    kind, api_version = document.get("kind"), document.get("apiVersion")
    if kind not in ("ScaledObject", "ScaledJob") or api_version != API_VERSION:
        raise ManifestError(
            f"{source}: kind: {kind!s:.60}, apiVersion: {api_version!s:.60} is not a ScaledObject or ScaledJob "
            f"(expected apiVersion: {API_VERSION})"
        )
    problems = schemas.errors(document, kind)
    if problems:
        field, message = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ManifestError(f"{source}: {field}: {message}{more} [checked against {schemas.origin}]")
    meta = document.get("metadata") or {}
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise ManifestError(f"{source}: metadata.name: is required")
    namespace = meta.get("namespace") or "default"
    source = f"{source} ({kind} {name})"
    spec = document["spec"]
    bounds = _bounds(spec, source)
    triggers = spec["triggers"]
    if not triggers:
        raise ManifestError(f"{source}: spec.triggers: needs at least one trigger")
    return ScaledResource(
        kind=kind,
        name=name,
        namespace=str(namespace),
        bounds=bounds,
        triggers=tuple(_trigger(i, t, source, need_address) for i, t in enumerate(triggers)),
        source=source,
    )


def _bounds(spec: Mapping[str, Any], source: str) -> Bounds:
    minimum = int(spec.get("minReplicaCount", 0))
    maximum = int(spec.get("maxReplicaCount", DEFAULT_MAX_REPLICAS))
    idle = spec.get("idleReplicaCount")
    if minimum > maximum:
        raise ManifestError(f"{source}: spec.minReplicaCount: {minimum} is greater than maxReplicaCount ({maximum})")
    if idle is not None and int(idle) >= minimum:
        # KEDA's admission webhook refuses this combination.
        raise ManifestError(
            f"{source}: spec.idleReplicaCount: must be less than minReplicaCount ({minimum}), got {idle}"
        )
    return Bounds(minimum, maximum, None if idle is None else int(idle))


def _trigger(index: int, raw: Mapping[str, Any], source: str, need_address: bool) -> TriggerSpec:
    path = f"spec.triggers[{index}]"
    trigger_type = str(raw["type"])
    metadata = resolve_env_references(raw.get("metadata") or {})
    metric_type = raw.get("metricType", "AverageValue")
    if trigger_type in EXTERNAL_TYPES:
        if metric_type not in ("AverageValue", "Value"):
            raise ManifestError(
                f"{source}: {path}.metricType: must be AverageValue or Value for an {trigger_type} trigger, "
                f"got {metric_type!s:.40}"
            )
        if need_address and not metadata.get("scalerAddress"):
            raise ManifestError(f"{source}: {path}.metadata.scalerAddress: is required (or give --address / --local)")
    return TriggerSpec(
        index=index,
        type=trigger_type,
        name=str(raw.get("name") or ""),
        metadata=metadata,
        metric_type="Value" if metric_type == "Value" else "AverageValue",
    )


def resolve_env_references(metadata: Mapping[str, str]) -> dict[str, str]:
    """What KEDA sends: a `xFromEnv` key carries the variable's value (read here from this shell's
    environment, as KEDA reads the scale target's container), and is dropped when that is unset or empty."""
    resolved: dict[str, str] = {}
    for key, value in metadata.items():
        if key.endswith(FROM_ENV_SUFFIX) and len(key) > len(FROM_ENV_SUFFIX):
            env_value = os.environ.get(value, "")
            if env_value:
                resolved[key] = env_value
        else:
            resolved[key] = value
    return resolved
