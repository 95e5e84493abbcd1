"""Trigger metadata declared once, as a pydantic model per adapter.

KEDA sends every value as a string under camelCase keys (its built-in scalers' names). A model declares
its fields in snake_case; the alias generator gives the camelCase key, so `activation_threshold` is read
from `activationThreshold`. Parsing, error messages, `xFromEnv` handling and the README tables all come
from this one declaration.
"""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, SecretStr, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from .errors import InvalidMetadata

FROM_ENV_SUFFIX = "FromEnv"
INT64_MAX = 2**63 - 1  # Go's int64, as KEDA's typed config and the protocol's int fields hold numbers
MAX_DURATION = 30 * 86400.0  # beyond this a duration is a typo, and huge ones overflow timers

# KEDA's typed config (pkg/scalers/scalersconfig/typed_config.go) is the rule every built-in scaler follows,
# so a trigger moved over from KEDA must read the same here: Go's time.ParseDuration, else an integer
# number of milliseconds (strconv.ParseInt); Go's strconv.ParseBool; numbers as encoding/json reads them.
_GO_DURATION = re.compile(r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:ns|us|\u00b5s|\u03bcs|ms|s|m|h))+|[-+]?0")
_GO_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_INT = re.compile(r"[-+]?\d+")
_GO_BOOLS = {
    **dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
    **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False),
}


def go_bool(text: str) -> bool | None:
    """Go's strconv.ParseBool (what KEDA uses), None when it would fail."""
    return _GO_BOOLS.get(text.strip())


_JSON_FLOAT = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_JSON_INT = re.compile(r"-?(?:0|[1-9]\d*)")


def parse_duration(text: str) -> float:
    """A Go duration (`30s`, `1m30s`, `500ms`) or an integer number of milliseconds, as seconds.

    As KEDA's typed config reads `time.Duration` fields: a negative duration is an error. ValueError
    (for a validator) when malformed.
    """
    text = text.strip()
    if _GO_DURATION.fullmatch(text):
        seconds = float(sum(float(n) * _GO_UNITS[unit] for n, unit in _GO_PART.findall(text)))
        negative = text.startswith("-")
    elif _GO_INT.fullmatch(text):
        # Go's strconv.ParseInt(text, 10, 64), as KEDA reads milliseconds: beyond int64 is out of range (and
        # would overflow a float here).
        if len(text.lstrip("+-")) > 19 or abs(int(text)) > INT64_MAX:
            raise ValueError(f"is out of range for a number of milliseconds, got {text[:40]!r}")
        seconds, negative = abs(int(text)) / 1000, text.startswith("-")
    else:
        raise ValueError(
            f"expected a duration such as 30s, 1m30s or 500ms, or a number of milliseconds, got {text[:40]!r}"
        )
    if negative and seconds > 0:
        raise ValueError(f"must not be negative, got {text[:40]!r}")
    if seconds > MAX_DURATION:
        raise ValueError(f"must be at most {MAX_DURATION // 86400:.0f} days")
    return seconds


def normalize_string(text: str) -> str:
    """KEDA's kedautil.NormalizeString: `/ . : % ( )` become `-`; built-in scalers' metric names use it."""
    return re.sub(r"[/.:%()]", "-", text)


def _duration_field(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


class _Kind:
    """A marker in a field's Annotated metadata, so the README tables can say `duration` rather than float."""

    def __init__(self, name: str) -> None:
        self.name = name


Duration = Annotated[float, _Kind("duration"), BeforeValidator(_duration_field)]
"""A metadata field holding a duration (KEDA's rule); the model holds it as seconds."""


def aliases(*names: str) -> AliasChoices:
    """Several metadata keys for one field, the first given wins (KEDA's `name=authModes;authMode`)."""
    return AliasChoices(*names)


def _scalar_type(annotation: Any) -> Any:
    """bool, int or float for `bool`, `int | None`, ...; None for anything else."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else None
    return annotation if annotation in (bool, int, float) else None


def _is_duration(metadata: list[Any]) -> bool:
    return any(isinstance(item, _Kind) and item.name == "duration" for item in metadata)


def _keda_scalar(kind: Any, text: str) -> Any:
    """A metadata string read the way KEDA's typed config reads a bool, an int or a float64 field."""
    if kind is bool:
        if text not in _GO_BOOLS:
            raise ValueError(f"expected a boolean (true, false, 1, 0, t, f, TRUE, FALSE), got {text[:40]!r}")
        return _GO_BOOLS[text]
    pattern, what = (_JSON_INT, "an integer") if kind is int else (_JSON_FLOAT, "a number")
    if not pattern.fullmatch(text):
        raise ValueError(f"expected {what}, got {text[:40]!r}")
    return int(text) if kind is int else float(text)


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
        # Schemas are built when a trigger first parses with the model, not at import: start-up imports every
        # adapter, and building all their validators is most of what pydantic costs before SERVING (issue 18).
        defer_build=True,
    )

    target_key: ClassVar[str] = "value"
    activation_key: ClassVar[str] = "activationValue"
    address_keys: ClassVar[tuple[str, ...]] = ()
    """Keys holding a network address (URL or host) the adapter will connect to: the egress policy checks them."""
    object_keys: ClassVar[tuple[str, ...]] = ()
    """Keys that name what is measured and how it becomes a number (queue, query, mode, ...), never where or
    how credentials travel: a trigger may set these on top of a named connection (with the target keys)."""

    @model_validator(mode="before")
    @classmethod
    def _keda_rules(cls, data: Any) -> Any:
        """KEDA's rules for every adapter: blank means absent; bools, ints and floats as KEDA parses them."""
        if not isinstance(data, Mapping):
            return data
        # KEDA trims every value (configParamValue), so `header\n` is `header`, and blank is absent.
        values = {k: v.strip() if isinstance(v, str) else v for k, v in data.items()}
        values = {k: v for k, v in values.items() if v != ""}
        errors: list[str] = []
        for name, field in cls.model_fields.items():
            kind = _scalar_type(field.annotation)
            if kind is None or _is_duration(field.metadata):
                continue
            for key in _field_keys(name, field):
                raw = values.get(key)
                if isinstance(raw, str):
                    try:
                        values[key] = _keda_scalar(kind, raw.strip())
                    except ValueError as exc:
                        errors.append(f"{key}: {exc}")
        if errors:
            raise ValueError(errors[0])
        return values

    path_keys: ClassVar[tuple[str, ...]] = ()
    """Keys holding a path in the scaler's filesystem: a trigger may give them only inside `trigger_file_dirs`."""
    env_path_keys: ClassVar[tuple[str, ...]] = ()
    """Keys naming a variable of the scaler's environment that holds a path (`credentialsFromEnvFile`): the
    path the variable holds is confined like a `path_keys` value."""

    def embedded_addresses(self) -> list[tuple[str, str]]:
        """(metadata key, URL) of addresses inside other values that the adapter will connect to, such as
        the token endpoint named in a credentials document: the egress policy checks them too."""
        return []

    @classmethod
    def field_for_key(cls, key: str) -> str:
        for name, field in cls.model_fields.items():
            if key in _field_keys(name, field):
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

    def keda_values(self) -> dict[str, str]:
        """Every non-empty string value under its metadata key, secrets revealed: for code that reads KEDA's
        names (the shared auth layer's rules). Never log it."""
        values: dict[str, str] = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            if isinstance(text, str) and text:
                values[field.alias or name] = text
        return values

    @classmethod
    def grantable_keys(cls) -> frozenset[str]:
        """What a trigger may add to a named connection: the object keys and the target/activation keys."""
        return frozenset((*cls.object_keys, cls.target_key, cls.activation_key))

    @classmethod
    def keys(cls) -> list[str]:
        return [key for name, field in cls.model_fields.items() for key in _field_keys(name, field)]


def _field_keys(name: str, field: Any) -> list[str]:
    """The metadata keys of a field: its alias, then any alternatives given with `aliases()`."""
    keys = [field.alias or name]
    if isinstance(field.validation_alias, AliasChoices):
        keys += [k for k in field.validation_alias.choices if isinstance(k, str) and k not in keys]
    return keys


M = TypeVar("M", bound=TriggerMetadata)


def resolve_from_env(metadata: Mapping[str, str]) -> dict[str, str]:
    """Read `xFromEnv` as `x`: KEDA has already resolved the variable and sent its value under that key.

    As in KEDA's typed config, a blank value counts as absent and a literal `x` wins over `xFromEnv`
    (giving both is not an error: KEDA looks in the trigger's metadata first).
    """
    present = {key: value for key, value in metadata.items() if value.strip()}
    resolved = {key: value for key, value in present.items() if not _is_from_env(key)}
    for key, value in present.items():
        if _is_from_env(key):
            resolved.setdefault(key[: -len(FROM_ENV_SUFFIX)], value)
    return resolved


def _is_from_env(key: str) -> bool:
    return key.endswith(FROM_ENV_SUFFIX) and len(key) > len(FROM_ENV_SUFFIX)


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
    if round(target) > INT64_MAX:  # KEDA's MetricSpec carries it as an int64 too (targetSize)
        raise InvalidMetadata(parsed.target_key, f"must be at most {INT64_MAX} (an int64), got {target:g}")
    # A negative activation threshold is accepted, as in KEDA: the trigger is then always active.
    activation = parsed.activation_target
    if not math.isfinite(activation):
        raise InvalidMetadata(parsed.activation_key, f"must be a finite number, got {activation:g}")


def describe_fields(model: type[TriggerMetadata]) -> list[dict[str, Any]]:
    """One row per metadata key: what the README tables and `scaler adapters` print."""
    rows = []
    for name, field in model.model_fields.items():
        default: Any = None if field.is_required() else field.get_default(call_default_factory=True)
        annotation = field.annotation
        type_name = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
        if _is_duration(field.metadata):
            type_name = "duration"
        rows.append(
            {
                "key": " / ".join(_field_keys(name, field)),
                "type": type_name,
                "required": field.is_required(),
                "default": default,
                "secret": annotation is SecretStr or "SecretStr" in str(annotation),
                "description": field.description or "",
            }
        )
    return rows
