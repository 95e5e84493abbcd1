"""Validate a manifest against KEDA's CRD schema, naming the offending field.

Where the schemas come from, first match wins:
1. `--crds DIR` or SCALER_KEDA_CRDS: KEDA's CRD manifests (`keda.sh_scaledobjects.yaml`, ...), e.g. from a
   KEDA release or checkout. Given explicitly, a missing or broken file is an error, not a silent fallback.
2. the cluster's own CRDs via `kubectl get crd ... -o json`, when kubectl and a current context exist: the
   exact KEDA version the manifests will meet;
3. a built-in subset of the fields `scaler check` reads.
The result names which one was used. Validation is `jsonschema` (Draft 4, which OpenAPI v3.0 schemas
follow) on a copy of the schema adapted to what the API server enforces: Kubernetes' own keywords, and
unknown fields refused as kubectl's default strict field validation refuses them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import jsonschema
import yaml

from adapters.api import redact

ENV_VAR = "SCALER_KEDA_CRDS"
CRD_FILES = {"ScaledObject": "keda.sh_scaledobjects.yaml", "ScaledJob": "keda.sh_scaledjobs.yaml"}
CRD_NAMES = {"ScaledObject": "scaledobjects.keda.sh", "ScaledJob": "scaledjobs.keda.sh"}
KUBECTL_TIMEOUT = 20.0
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
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
            "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "spec": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "required": [target, "triggers"],
                "properties": {
                    target: {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                        **({"required": ["name"]} if kind == "ScaledObject" else {}),
                    },
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


class CrdError(Exception):
    """Schemas the user pointed at cannot be used; the message names the place."""


@dataclass(frozen=True)
class Schemas:
    """The openAPIV3Schema per kind, and a sentence naming where they came from."""

    by_kind: Mapping[str, Mapping[str, Any]]
    origin: str

    def errors(self, document: Any, kind: str) -> list[tuple[str, str]]:
        return list(schema_errors(document, self.by_kind[kind]))


def built_in(reason: str = "") -> Schemas:
    return Schemas(BUILT_IN, "the built-in subset" + (f" ({reason})" if reason else ""))


def load_schemas(crds: str | None = None, environ: Mapping[str, str] | None = None) -> Schemas:
    """The schemas from `crds` / SCALER_KEDA_CRDS, else the cluster (kubectl), else the built-in subset."""
    environ = os.environ if environ is None else environ
    directory = crds or environ.get(ENV_VAR, "")
    if directory:
        return from_directory(Path(directory), "--crds" if crds else ENV_VAR)
    return from_cluster(environ)


def from_directory(directory: Path, given_by: str) -> Schemas:
    schemas = {}
    for kind, name in CRD_FILES.items():
        path = directory / name
        try:
            crd = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
        except OSError as exc:
            raise CrdError(f"{given_by} {directory}: cannot read {name}: {exc.strerror}") from None
        except yaml.YAMLError:
            raise CrdError(f"{given_by} {directory}: {name} is not valid YAML") from None
        schemas[kind] = _schema_of(crd, kind, f"{given_by} {directory}: {name}")
    return Schemas(schemas, f"KEDA's CRDs from {directory}")


def from_cluster(environ: Mapping[str, str]) -> Schemas:
    """The cluster's CRDs when kubectl has a current context; else the built-in subset, saying why."""
    kubectl = shutil.which("kubectl", path=environ.get("PATH"))
    if kubectl is None:
        return built_in("no --crds, no kubectl")
    context = _kubectl(kubectl, environ, "config", "current-context")
    if context is None or not context.strip():
        return built_in("no --crds, no current kubectl context")
    listing = _kubectl(kubectl, environ, "get", "crd", *CRD_NAMES.values(), "-o", "json")
    where = f"context {context.strip()[:80]}"
    if listing is None:
        return built_in(f"kubectl could not read KEDA's CRDs in {where}")
    try:
        items = json.loads(listing)["items"]
        found = {item["spec"]["names"]["kind"]: item for item in items}
        schemas = {kind: _schema_of(found[kind], kind, f"the cluster's CRD {CRD_NAMES[kind]}") for kind in CRD_FILES}
    except (ValueError, KeyError, TypeError, CrdError):
        return built_in(f"kubectl gave no usable KEDA CRDs in {where}")
    return Schemas(schemas, f"the cluster's KEDA CRDs (kubectl {where})")


def _kubectl(kubectl: str, environ: Mapping[str, str], *args: str) -> str | None:
    try:
        done = subprocess.run(
            [kubectl, *args], capture_output=True, text=True, timeout=KUBECTL_TIMEOUT, env=dict(environ), check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _schema_of(crd: Any, kind: str, where: str) -> dict[str, Any]:
    try:
        versions = crd["spec"]["versions"]
        version = next(v for v in versions if v["name"] == "v1alpha1")
        schema = version["schema"]["openAPIV3Schema"]
    except (KeyError, TypeError, StopIteration):
        raise CrdError(f"{where}: no v1alpha1 openAPIV3Schema for {kind}") from None
    if not isinstance(schema, dict):
        raise CrdError(f"{where}: the openAPIV3Schema of {kind} is not a mapping")
    return schema


# --- validation --------------------------------------------------------------------------------------


def _int_or_string(validator: Any, enabled: Any, value: Any, schema: Any) -> Iterator[jsonschema.ValidationError]:
    if enabled and (not isinstance(value, (int, str)) or isinstance(value, bool)):
        yield jsonschema.ValidationError("must be an integer or a string")


_FORMATS = jsonschema.FormatChecker([])
for _name, (_low, _high) in _INT_RANGES.items():
    # Bound the loop variables: one checker per format.
    _FORMATS.checks(_name)(lambda value, low=_low, high=_high: not isinstance(value, int) or low <= value <= high)

_Validator = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft4Validator, {"x-kubernetes-int-or-string": _int_or_string}
)


def strict(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a CRD schema as the API server applies it: `nullable` allows null, int-or-string drops its
    `type`, and an object that lists its fields refuses others unless it preserves unknown fields."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: strict(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = strict(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [strict(child) for child in value]
        else:
            out[key] = value
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
    refuses_unknown = not out.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in out
    if "properties" in out and refuses_unknown:
        out["additionalProperties"] = False
    return out


def schema_errors(value: Any, schema: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(field path, problem) for every place `value` breaks `schema`, outermost first."""
    validator = _Validator(strict(schema), format_checker=_FORMATS)
    found: list[tuple[int, str, str]] = []
    for error in validator.iter_errors(value):
        path = list(error.absolute_path)
        found.extend((len(path) + extra, where, problem) for extra, where, problem in _explain(error, path))
    seen = set()
    for _, where, problem in sorted(found, key=lambda item: item[0]):
        if (where, problem) not in seen:
            seen.add((where, problem))
            yield where, problem


# Keywords whose message is the limit and, for numbers, the value given.
_BOUNDS = {
    "minimum": "must be at least {expected}, got {value}",
    "maximum": "must be at most {expected}, got {value}",
    "format": "must fit in {expected}, got {value}",
    "maxLength": "is longer than {expected} characters",
    "minItems": "must have at least {expected} item{s}",
    "maxItems": "must have at most {expected} item{s}",
    "pattern": "does not match {expected}",
}


def _explain(error: jsonschema.ValidationError, path: list[Any]) -> Iterator[tuple[int, str, str]]:
    """jsonschema's error as (depth bonus, field path, problem) in the CLI's words; values are cut short."""
    # jsonschema types these as "maybe unset"; an error from iter_errors always has them.
    keyword, expected, value = error.validator, cast(Any, error.validator_value), error.instance
    error_schema = cast(Mapping[str, Any], error.schema)
    where = _path(path)
    if keyword == "required":
        for key in expected:
            if isinstance(value, dict) and key not in value:
                yield 1, _path([*path, key]), "is required"
    elif keyword == "additionalProperties" and isinstance(value, dict):
        known = sorted(error_schema.get("properties", {}))
        parent = where if path else "the object"
        for key in value:
            if key not in known:
                yield 1, _path([*path, key]), f"is not a field of {parent} (known: {', '.join(known)})"
    elif keyword == "type":
        wanted = expected if isinstance(expected, str) else " or ".join(t for t in expected if t != "null")
        yield 0, where, f"must be {'an' if wanted[0] in 'aeiou' else 'a'} {wanted}, got {_describe(value)}"
    elif keyword in _BOUNDS:
        yield 0, where, _BOUNDS[keyword].format(expected=expected, value=value, s="s" if expected != 1 else "")
    elif keyword == "minLength":
        yield 0, where, "must not be empty" if expected == 1 else f"is shorter than {expected}"
    elif keyword == "enum":
        yield 0, where, f"must be one of {', '.join(map(str, expected))}, got {_describe(value)}"
    elif keyword in ("anyOf", "oneOf"):
        yield 0, where, "matches none of the allowed shapes"
    else:
        yield 0, where, redact(error.message)[:200]


def _path(parts: list[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(document)"


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
