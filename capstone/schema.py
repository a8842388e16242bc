"""Pipeline definitions: a record shape (fields, key, event time), its model, and schema changes.

The built-in `events` pipeline is the seed's shape (key, name, value, ts); a `capstone.toml`
declares others. A definition is checked by Pydantic, turned into a record model with
`pydantic.create_model`, and compared with the one stored in the database before a run.
"""

import contextlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, SchemaError

from capstone.fates import RESERVED_COLUMNS, RESERVED_FIELDS, StagingLayout
from capstone.jsontext import dumps_exact, has_non_finite
from capstone.model import (
    MAX_TEXT_LENGTH,
    Event,
    iso_text_only,
    no_separators,
    number_not_bool,
)
from capstone.timeutil import parse_duration, to_utc_naive

__all__ = [
    "EVENTS",
    "FieldSpec",
    "FieldType",
    "PipelineSpec",
    "RecordShape",
    "SchemaPlan",
    "plan_changes",
    "shape_of",
]

FieldType = Literal["string", "integer", "float", "boolean", "timestamp", "json"]
Unknown = Literal["keep", "reject", "drop"]

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
RESERVED_TABLES = frozenset(
    {
        "run_log",
        "run_steps",
        "run_reasons",
        "watermarks",
        "staging",
        "target",
        "dead_letters",
        "lineage",
        "schema_migrations",
        "pipeline_schemas",
        "schema_changes",
    }
)
BUILTIN = "events"


def _duration(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except Exception as error:
            raise ValueError(str(error).removeprefix("cannot read duration ")) from None
    return value


def _not_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError("a duration cannot be negative; use 0 or a span such as 2h")
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration), AfterValidator(_not_negative)]
"""A span of time from "90s", "2h", "1h30m" or a number of seconds; never negative, since a
negative lookback would skip records newer than the watermark."""


class FieldSpec(BaseModel):
    """One field of a record: its type and the constraints a valid value meets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: FieldType
    required: bool = True
    min: float | None = None
    max: float | None = None
    min_length: int | None = Field(None, ge=0)
    max_length: int | None = Field(None, ge=1)
    pattern: str | None = None
    allowed: tuple[str | int | float, ...] | None = Field(None, min_length=1)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        # pydantic's default engine (Rust's regex) runs in time linear in the text, so no record
        # can make a pattern backtrack for ever, and its `$` is the end of the text, not the
        # place before a final newline. It has no lookaround and no backreferences.
        if value is not None:
            try:
                TypeAdapter(Annotated[str, StringConstraints(pattern=value)])
            except SchemaError:
                raise ValueError(
                    "is not a regular expression capstone can run: check the syntax (lookaround "
                    "and backreferences are not supported)"
                ) from None
        return value

    @model_validator(mode="after")
    def _fits_type(self) -> "FieldSpec":
        numeric = self.type in ("integer", "float")
        if (self.min is not None or self.max is not None) and not numeric:
            raise ValueError(f"min and max apply to integer and float fields, not {self.type}")
        textual = (self.min_length, self.max_length, self.pattern)
        if any(v is not None for v in textual) and self.type != "string":
            raise ValueError(
                f"min_length, max_length and pattern apply to string fields, not {self.type}"
            )
        if self.allowed is not None and self.type not in ("string", "integer", "float"):
            raise ValueError(
                f"allowed applies to string, integer and float fields, not {self.type}"
            )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if any(bound is not None and not math.isfinite(bound) for bound in (self.min, self.max)):
            raise ValueError("min and max must be finite numbers")
        shortest, longest = self.min_length, self.max_length
        if shortest is not None and longest is not None and shortest > longest:
            raise ValueError(f"min_length ({shortest}) is greater than max_length ({longest})")
        if self.allowed is not None and not all(map(self._takes, self.allowed)):
            raise ValueError(f"allowed holds a value no {self.type} field can have")
        return self

    def _takes(self, value: str | int | float) -> bool:
        # Settings that no value can meet would quietly reject every record.
        if self.type == "string":
            return isinstance(value, str)
        if isinstance(value, (bool, str)):
            return False
        return isinstance(value, int) or (self.type == "float" and math.isfinite(value))


EVENT_FIELDS: dict[str, FieldSpec] = {
    "key": FieldSpec(type="string", min_length=1, max_length=MAX_TEXT_LENGTH),
    "name": FieldSpec(type="string", min_length=1, max_length=MAX_TEXT_LENGTH),
    "value": FieldSpec(type="float"),
    "ts": FieldSpec(type="timestamp"),
}


class PipelineSpec(BaseModel):
    """A named pipeline: where records go, what they look like, which fields identify them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=IDENTIFIER.pattern)
    target: str = Field("", description="Target table; defaults to the pipeline's name.")
    key: tuple[str, ...] = ("key",)
    event_time: str = "ts"
    fields: dict[str, FieldSpec] = Field(default_factory=lambda: dict(EVENT_FIELDS))
    unknown: Unknown = "keep"
    lookback: Duration = timedelta(0)
    future_tolerance: Duration = timedelta(days=1)

    @field_validator("key", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            if not data.get("target"):
                data["target"] = data.get("name", "")
            if "fields" in data and ("key" not in data or "event_time" not in data):
                raise ValueError(
                    "a pipeline that declares fields must also name its key and event_time"
                )
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "PipelineSpec":
        if not IDENTIFIER.fullmatch(self.target):
            raise ValueError(
                f"target {self.target!r} is not a table name: use letters, digits and _"
            )
        if self.target.lower() in RESERVED_TABLES and not self.is_builtin:
            raise ValueError(f"target {self.target!r} is a capstone table; choose another name")
        if self.target.lower().startswith(("sqlite_", "pg_")):
            raise ValueError(f"target {self.target!r} uses a prefix the database reserves")
        if not self.fields:
            raise ValueError("declare at least the key and event_time fields")
        for name in self.fields:
            if not IDENTIFIER.fullmatch(name):
                raise ValueError(f"field {name!r} is not a column name: use letters, digits and _")
            if name.lower() in RESERVED_COLUMNS:
                raise ValueError(f"field {name!r} is a column capstone adds; rename it")
            if name.lower() in RESERVED_FIELDS:
                raise ValueError(f"field {name!r} is a name dead-letter exports use; rename it")
        if len({n.lower() for n in self.fields}) != len(self.fields):
            raise ValueError("two fields differ only in case; column names must differ")
        if not self.key or len(set(self.key)) != len(self.key):
            raise ValueError("key must name one field, or several different ones")
        for part in self.key:
            spec = self.fields.get(part)
            if spec is None:
                raise ValueError(f"key field {part!r} is not declared under fields")
            if not spec.required:
                raise ValueError(f"key field {part!r} must be required")
            if spec.type not in ("string", "integer"):
                raise ValueError(f"key field {part!r} must be a string or integer, not {spec.type}")
        event_time = self.fields.get(self.event_time)
        if event_time is None:
            raise ValueError(f"event_time field {self.event_time!r} is not declared under fields")
        if event_time.type != "timestamp" or not event_time.required:
            raise ValueError(f"event_time field {self.event_time!r} must be a required timestamp")
        if self.event_time in self.key:
            raise ValueError("event_time cannot be part of the key")
        return self

    @property
    def is_builtin(self) -> bool:
        return self.name == BUILTIN and self.target == "target" and self.fields == EVENT_FIELDS

    @property
    def columns(self) -> tuple[str, ...]:
        """The record's columns in staging and target, in declaration order."""
        return tuple(self.fields)

    @property
    def text_key(self) -> bool:
        """A single string key is its own lineage key; others get a `_lineage_key` column."""
        return len(self.key) == 1 and self.fields[self.key[0]].type == "string"

    @property
    def staging(self) -> StagingLayout:
        """Where each value sits in this pipeline's staged rows."""
        return StagingLayout(self.columns, self.key, own_lineage_key=not self.text_key)

    def lineage_key(self, parts: tuple[Any, ...]) -> str:
        """The text that names one record's key in lineage and dead letters."""
        if len(parts) == 1 and isinstance(parts[0], str):
            return parts[0]
        # A rejected record's key part may be an integer beyond 64 bits.
        return dumps_exact(parts[0] if len(parts) == 1 else list(parts))

    def definition(self) -> str:
        """The canonical JSON stored with the target table, compared on every run."""
        return self.model_dump_json(exclude={"name", "lookback", "future_tolerance"})


EVENTS = PipelineSpec(name=BUILTIN, target="target")
"""The seed's pipeline: key, name, value, ts, into the table `target`."""


# -- record models -------------------------------------------------------------------------------


def _not_allowed(allowed: tuple[Any, ...]) -> Callable[[Any], Any]:
    choices = ", ".join(repr(a) for a in allowed)

    def check(value: Any) -> Any:
        if value not in allowed:
            raise PydanticCustomError(
                "not_allowed", "must be one of {choices}", {"choices": choices}
            )
        return value

    return check


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""Both backends store integers in 64 bits (SQLite INTEGER, PostgreSQL bigint)."""


def _storable_json(value: Any) -> Any:
    # orjson writes only 64-bit integers and bounded nesting; what it cannot write cannot be kept.
    if has_non_finite(value):
        raise PydanticCustomError("not_finite", "NaN and Infinity are not JSON numbers")
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError as error:
        raise PydanticCustomError(
            "unstorable", "cannot be stored as JSON: {error}", {"error": str(error)}
        ) from None
    return value


def _present(value: Any) -> Any:
    # null is a JSON value, but stored it is SQL NULL, the same as no value at all.
    if value is None:
        raise PydanticCustomError("missing", "required, so it cannot be null or a blank cell")
    return value


def _blank_is_missing(value: Any) -> Any:
    # A CSV cell is always text; an empty one means "no value" for an optional field.
    return None if value == "" else value


def _integer_not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("booleans are not integers")
    if isinstance(value, str) and "_" in value:
        no_separators(value)
    return value


def _annotation(spec: FieldSpec) -> Any:
    metadata: list[Any] = []
    base: Any
    if spec.type == "string":
        base = str
        metadata.append(
            StringConstraints(
                min_length=spec.min_length, max_length=spec.max_length, pattern=spec.pattern
            )
        )
    elif spec.type == "integer":
        base = int
        low = INT64_MIN if spec.min is None else max(spec.min, INT64_MIN)
        high = INT64_MAX if spec.max is None else min(spec.max, INT64_MAX)
        metadata += [BeforeValidator(_integer_not_bool), Field(ge=low, le=high)]
    elif spec.type == "float":
        base = float
        metadata += [BeforeValidator(number_not_bool), Field(ge=spec.min, le=spec.max)]
    elif spec.type == "boolean":
        base = bool
    elif spec.type == "timestamp":
        base = datetime
        metadata += [BeforeValidator(iso_text_only), AfterValidator(to_utc_naive)]
    else:
        base = Any
        metadata.append(AfterValidator(_storable_json))
        if spec.required:
            metadata.append(AfterValidator(_present))
    if spec.allowed is not None:
        metadata.append(AfterValidator(_not_allowed(spec.allowed)))
    annotation: Any = Annotated[base, *metadata] if metadata else base
    if not spec.required:
        annotation = Annotated[annotation | None, BeforeValidator(_blank_is_missing)]
    return annotation


def build_model(spec: PipelineSpec) -> type[BaseModel]:
    """A Pydantic model for the pipeline's records; errors name fields by their record names."""
    extra = {"keep": "allow", "reject": "forbid", "drop": "ignore"}[spec.unknown]
    definitions: dict[str, Any] = {}
    for index, (name, field) in enumerate(spec.fields.items()):
        # Internal names keep record fields such as `json` or `copy` clear of BaseModel's own.
        default = ... if field.required else None
        definitions[f"f{index}"] = (_annotation(field), Field(default, alias=name))
    model: type[BaseModel] = create_model(
        f"{spec.name.title().replace('_', '')}Record",
        __config__=ConfigDict(
            extra=extra,  # type: ignore[typeddict-item]
            allow_inf_nan=False,
            populate_by_name=False,
        ),
        **definitions,
    )
    return model


def _json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(frozen=True, slots=True)
class RecordShape:
    """What the classifier needs to turn a validated record into a staging row."""

    spec: PipelineSpec
    model: type[BaseModel]
    values: Callable[[Any], tuple[Any, ...]]
    """The record's column values in staging order (timestamps as ISO text, JSON as text)."""
    event_time: Callable[[Any], datetime]
    lineage_key: Callable[[Any], str]
    strips_text: bool = False
    """Whether the model stores strings without surrounding whitespace (the seed's shape)."""

    def loose_key(self, record: dict[str, Any]) -> str | None:
        """A best-effort key for a record that failed validation (None when it has none), written
        as the model would have written it, so `capstone lineage KEY` finds the reject too."""
        parts: list[Any] = []
        for name in self.spec.key:
            value = record.get(name)
            if isinstance(value, str) and self.spec.fields[name].type == "integer":
                with contextlib.suppress(ValueError):
                    value = int(value)
            elif isinstance(value, float) and self.spec.fields[name].type == "integer":
                if value.is_integer():  # 2.0, which the model reads as 2
                    value = int(value)
            elif isinstance(value, str) and self.strips_text:
                value = value.strip()
            if not isinstance(value, (str, int)) or isinstance(value, bool):
                return None
            parts.append(value)
        return self.spec.lineage_key(tuple(parts))[:MAX_TEXT_LENGTH]

    @property
    def json_fields(self) -> tuple[str, ...]:
        """Fields of type json, whose CSV cells hold JSON text."""
        return tuple(name for name, field in self.spec.fields.items() if field.type == "json")

    def loose_event_time(self, record: dict[str, Any]) -> str | None:
        value = record.get(self.spec.event_time)
        return value if isinstance(value, str) else None


def _event_values(event: Any) -> tuple[Any, ...]:
    return (event.key, event.name, event.value, event.ts.isoformat())


class _EventRejectingUnknown(Event):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class _EventDroppingUnknown(Event):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, frozen=True)


_EVENT_MODELS: dict[str, type[BaseModel]] = {
    "keep": Event,
    "reject": _EventRejectingUnknown,
    "drop": _EventDroppingUnknown,
}


def shape_of(spec: PipelineSpec) -> RecordShape:
    """The record shape of a pipeline; the seed's fields use the hand-written `Event` model (with
    the pipeline's policy for unknown fields), so they are read alike whatever that policy."""
    # In order too: the model yields key, name, value, ts, the table's columns in that order.
    if (
        list(spec.fields.items()) == list(EVENT_FIELDS.items())
        and spec.key == ("key",)
        and spec.event_time == "ts"
    ):
        return RecordShape(
            spec,
            _EVENT_MODELS[spec.unknown],
            _event_values,
            lambda e: e.ts,
            lambda e: e.key,
            strips_text=True,
        )
    model = build_model(spec)
    names = [f"f{i}" for i in range(len(spec.fields))]
    converters: list[Callable[[Any], Any] | None] = []
    for field in spec.fields.values():
        converters.append(
            _iso if field.type == "timestamp" else _json_text if field.type == "json" else None
        )
    event_time_name = names[spec.columns.index(spec.event_time)]
    key_names = [names[spec.columns.index(k)] for k in spec.key]
    pairs = list(zip(names, converters, strict=True))

    def values(record: Any) -> tuple[Any, ...]:
        data = record.__dict__
        return tuple(data[n] if c is None else c(data[n]) for n, c in pairs)

    def lineage_key(record: Any) -> str:
        data = record.__dict__
        return spec.lineage_key(tuple(data[n] for n in key_names))

    def event_time(record: Any) -> datetime:
        value: datetime = record.__dict__[event_time_name]
        return value

    return RecordShape(spec, model, values, event_time, lineage_key)


# -- schema changes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SchemaPlan:
    """How a stored definition becomes the configured one."""

    added: list[str]
    """Optional fields to add as columns."""
    refused: list[str]
    """Changes that would lose or reinterpret stored data."""
    other: list[str]
    """Changes with nothing to migrate (constraints, unknown-field policy, target)."""

    @property
    def changed(self) -> bool:
        return bool(self.added or self.refused or self.other)


def plan_changes(old: PipelineSpec, new: PipelineSpec) -> SchemaPlan:
    """Compare the stored definition with the configured one."""
    added: list[str] = []
    refused: list[str] = []
    other: list[str] = []
    if old.key != new.key:
        refused.append(f"key ({', '.join(old.key)}) became ({', '.join(new.key)})")
    if old.event_time != new.event_time:
        refused.append(f"event_time {old.event_time!r} became {new.event_time!r}")
    for name, field in old.fields.items():
        if name not in new.fields:
            refused.append(f"field {name!r} was removed (its column holds data)")
        elif new.fields[name].type != field.type:
            refused.append(f"field {name!r} changed type {field.type} -> {new.fields[name].type}")
        elif new.fields[name] != field:
            other.append(f"constraints of field {name!r} changed")
    for name, field in new.fields.items():
        if name in old.fields:
            continue
        if name.lower() in {n.lower() for n in old.fields}:
            refused.append(f"field {name!r} differs from stored {name.lower()!r} only in case")
        elif field.required:
            refused.append(
                f"new field {name!r} is required, but stored rows have no value for it "
                "(add it with required = false)"
            )
        else:
            added.append(name)
    if old.unknown != new.unknown:
        other.append(f"unknown fields policy {old.unknown} -> {new.unknown}")
    if old.target != new.target:
        other.append(f"target table {old.target} -> {new.target}")
    return SchemaPlan(added, refused, other)
