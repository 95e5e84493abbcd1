"""Validate a manifest against KEDA's CRD schema (OpenAPI v3, the subset CRDs use), naming the offending field.

The schemas come from KEDA's own CRD manifests at `<repo root>/../shared/keda-crds/` when present (the same
schemas a cluster's API server enforces); an installed CLI without them falls back to a built-in schema
of the fields `scaler check` reads.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

CRD_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "keda-crds"
CRD_FILES = {"ScaledObject": "keda.sh_scaledobjects.yaml", "ScaledJob": "keda.sh_scaledjobs.yaml"}
_INT32 = (-(2**31), 2**31 - 1)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_COUNT = {"type": "integer", "format": "int32", "minimum": 0}
_TRIGGER = {
    "type": "object",
    "required": ["metadata", "type"],
    "properties": {
        "type": {"type": "string", "minLength": 1},
        "name": {"type": "string"},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "metricType": {"type": "string"},
        "useCachedMetrics": {"type": "boolean"},
        "authenticationRef": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
    },
}
# Only what the CLI reads; everything else is let through (the real CRD checks it when present).
BUILT_IN: dict[str, dict[str, Any]] = {
    kind: {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "required": [target, "triggers"],
                "properties": {
                    target: {"type": "object", **({"required": ["name"]} if kind == "ScaledObject" else {})},
                    "minReplicaCount": _COUNT,
                    "maxReplicaCount": {**_COUNT, "minimum": 1},
                    "idleReplicaCount": _COUNT,
                    "triggers": {"type": "array", "items": _TRIGGER},
                },
            },
        },
    }
    for kind, target in (("ScaledObject", "scaleTargetRef"), ("ScaledJob", "jobTargetRef"))
}


@functools.cache
def crd_schema(kind: str) -> tuple[dict[str, Any], str]:
    """The openAPIV3Schema for `kind` and where it came from ('KEDA CRD' or 'built-in')."""
    path = CRD_DIR / CRD_FILES[kind]
    try:
        crd = yaml.load(path.read_text(), Loader=_Loader)
        version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
        return version["schema"]["openAPIV3Schema"], "KEDA CRD"
    except (OSError, yaml.YAMLError, KeyError, TypeError, StopIteration):
        return BUILT_IN[kind], "built-in"


def schema_errors(value: Any, schema: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, str]]:
    """(field path, problem) for every place `value` breaks `schema`, outermost first."""
    where = path or "(document)"
    if value is None and schema.get("nullable"):
        return
    if schema.get("x-kubernetes-int-or-string"):
        if not isinstance(value, (int, str)) or isinstance(value, bool):
            yield where, "must be an integer or a string"
        return
    if "anyOf" in schema and not any(next(schema_errors(value, s, path), None) is None for s in schema["anyOf"]):
        yield where, "matches none of the allowed shapes"
        return
    expected = schema.get("type")
    if expected is not None and not _is_type(value, expected):
        yield where, f"must be {'an' if expected[0] in 'aeiou' else 'a'} {expected}, got {_describe(value)}"
        return
    yield from _scalar_errors(value, schema, where)
    if isinstance(value, dict):
        yield from _object_errors(value, schema, path)
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            yield from schema_errors(item, schema["items"], f"{path}[{index}]")


def _object_errors(value: dict[Any, Any], schema: Mapping[str, Any], path: str) -> Iterator[tuple[str, str]]:
    properties: Mapping[str, Any] = schema.get("properties", {})
    for key in schema.get("required", ()):
        if key not in value:
            yield _join(path, key), "is required"
    extra = schema.get("additionalProperties")
    for key, item in value.items():
        child = _join(path, str(key))
        if key in properties:
            yield from schema_errors(item, properties[key], child)
        elif isinstance(extra, dict):
            yield from schema_errors(item, extra, child)
        elif properties and not schema.get("x-kubernetes-preserve-unknown-fields") and extra is not True:
            # kubectl's default (strict) field validation refuses unknown fields: a typo is not ignored.
            yield child, f"is not a field of {path or 'the object'} (known: {', '.join(sorted(properties))})"


def _scalar_errors(value: Any, schema: Mapping[str, Any], where: str) -> Iterator[tuple[str, str]]:
    if "enum" in schema and value not in schema["enum"]:
        yield where, f"must be one of {', '.join(map(str, schema['enum']))}, got {_describe(value)}"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            yield where, f"must be at least {schema['minimum']}, got {value}"
        if "maximum" in schema and value > schema["maximum"]:
            yield where, f"must be at most {schema['maximum']}, got {value}"
        if schema.get("format") == "int32" and not _INT32[0] <= value <= _INT32[1]:
            yield where, f"must fit in 32 bits, got {value}"
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            yield where, "must not be empty" if schema["minLength"] == 1 else f"is shorter than {schema['minLength']}"
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            yield where, f"is longer than {schema['maxLength']} characters"
        if "pattern" in schema and not re.search(schema["pattern"], value):
            yield where, f"does not match {schema['pattern']}"


def _is_type(value: Any, expected: str) -> bool:
    if expected == "object":
        return isinstance(value, dict)
    if expected == "array":
        return isinstance(value, list)
    if expected == "string":
        return isinstance(value, str)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return True


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    return "a list" if isinstance(value, list) else "a mapping"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
