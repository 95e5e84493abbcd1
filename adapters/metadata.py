"""Trigger metadata declared once, as a pydantic model per adapter.

KEDA sends every value as a string under camelCase keys (its built-in scalers' names). A model declares
its fields in snake_case; the alias generator gives the camelCase key, so `activation_threshold` is read
from `activationThreshold`. Parsing, error messages, `xFromEnv` handling and the README tables all come
from this one declaration.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError
from pydantic.alias_generators import to_camel

from .errors import InvalidMetadata

FROM_ENV_SUFFIX = "FromEnv"
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_DURATION = 30 * 86400.0  # beyond this a duration is a typo, and huge ones overflow timers


def parse_duration(text: str) -> float:
    """`30s`, `2m`, `1h`, `250ms` or plain seconds, as seconds; ValueError (for a validator) when malformed."""
    match = _DURATION.fullmatch(text)
    if not match:
        raise ValueError(f"expected a duration such as 30s, 2m or 1h, got {text[:40]!r}")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    if seconds > MAX_DURATION:
        raise ValueError(f"must be at most {MAX_DURATION // 86400:.0f} days")
    return seconds


class TriggerMetadata(BaseModel):
    """Base class of every adapter's metadata model.

    `target_key` and `activation_key` name the fields that hold the HPA target and the activation
    threshold, using the metadata (camelCase) key, so the engine and the docs can find them.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=False,
        extra="ignore",
        frozen=True,
        str_strip_whitespace=True,
        allow_inf_nan=False,
        hide_input_in_errors=True,
    )

    target_key: ClassVar[str] = "value"
    activation_key: ClassVar[str] = "activationValue"
    address_keys: ClassVar[tuple[str, ...]] = ()
    """Keys holding a network address (URL or host) the adapter will connect to: the egress policy checks them."""
    path_keys: ClassVar[tuple[str, ...]] = ()
    """Keys holding a path in the scaler's filesystem: a trigger may give them only inside `trigger_file_dirs`."""

    def embedded_addresses(self) -> list[tuple[str, str]]:
        """(metadata key, URL) of addresses inside other values that the adapter will connect to, such as
        the token endpoint named in a credentials document: the egress policy checks them too."""
        return []

    @classmethod
    def field_for_key(cls, key: str) -> str:
        for name, field in cls.model_fields.items():
            if (field.alias or name) == key:
                return name
        raise KeyError(key)

    @property
    def target(self) -> float:
        return float(getattr(self, self.field_for_key(self.target_key)))

    @property
    def activation_target(self) -> float:
        value = getattr(self, self.field_for_key(self.activation_key))
        return 0.0 if value is None else float(value)

    def secrets(self) -> list[str]:
        """Every secret value in this metadata, so the engine can keep them out of logs and errors."""
        found = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                found.append(value.get_secret_value())
        return found

    @classmethod
    def keys(cls) -> list[str]:
        return [field.alias or name for name, field in cls.model_fields.items()]


M = TypeVar("M", bound=TriggerMetadata)


def resolve_from_env(metadata: Mapping[str, str]) -> dict[str, str]:
    """Read `xFromEnv` as `x`: KEDA has already resolved the variable and sent its value under that key.

    Giving both `x` and `xFromEnv` with different values is ambiguous, so it is an error that names both.
    """
    resolved: dict[str, str] = {}
    for key, value in metadata.items():
        if key.endswith(FROM_ENV_SUFFIX) and len(key) > len(FROM_ENV_SUFFIX):
            continue
        resolved[key] = value
    for key, value in metadata.items():
        if not (key.endswith(FROM_ENV_SUFFIX) and len(key) > len(FROM_ENV_SUFFIX)):
            continue
        plain = key[: -len(FROM_ENV_SUFFIX)]
        if plain in resolved and resolved[plain] != value:
            raise InvalidMetadata(plain, f"both '{plain}' and '{key}' are set; give only one")
        resolved[plain] = value
    return resolved


def parse_metadata(model: type[M], metadata: Mapping[str, str]) -> M:
    """Validate metadata against a model; the first problem becomes an InvalidMetadata naming its key."""
    try:
        parsed = model.model_validate(dict(metadata))
    except ValidationError as exc:
        raise _first_error(model, exc) from None
    _check_target(parsed)
    return parsed


def _first_error(model: type[TriggerMetadata], exc: ValidationError) -> InvalidMetadata:
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = err.get("loc") or ()
    key = str(loc[0]) if loc else ""
    if err["type"] == "missing":
        return InvalidMetadata(key, f"is required ({_describe(model, key)})")
    message = str(err["msg"])
    # Model-level validators report their own key as "key: message".
    if not key and ": " in message and message.startswith("Value error, "):
        key, _, message = message.removeprefix("Value error, ").partition(": ")
    return InvalidMetadata(key, message.removeprefix("Value error, "))


def _describe(model: type[TriggerMetadata], key: str) -> str:
    for name, field in model.model_fields.items():
        if (field.alias or name) == key and field.description:
            return field.description.rstrip(".")
    return "see the adapter's metadata table"


def _check_target(parsed: TriggerMetadata) -> None:
    # A target of 0 (or NaN/inf) is meaningless to the HPA: reject it where the user wrote it.
    target = parsed.target
    if not (math.isfinite(target) and target > 0):
        raise InvalidMetadata(parsed.target_key, f"must be a number greater than 0, got {target:g}")
    activation = parsed.activation_target
    if not (math.isfinite(activation) and activation >= 0):
        raise InvalidMetadata(parsed.activation_key, f"must be a number of 0 or more, got {activation:g}")


def describe_fields(model: type[TriggerMetadata]) -> list[dict[str, Any]]:
    """One row per metadata key: what the README tables and `scaler adapters` print."""
    rows = []
    for name, field in model.model_fields.items():
        default: Any = None if field.is_required() else field.get_default(call_default_factory=True)
        annotation = field.annotation
        type_name = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
        rows.append(
            {
                "key": field.alias or name,
                "type": type_name,
                "required": field.is_required(),
                "default": default,
                "secret": annotation is SecretStr or "SecretStr" in str(annotation),
                "description": field.description or "",
            }
        )
    return rows
