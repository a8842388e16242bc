"""Record models: what a valid record of a pipeline is, and how a failed validation reads.

The seed's `Event` is written by hand (it is the hot path of the built-in pipeline); any other
pipeline's model is generated from its spec with `pydantic.create_model`. `shape_of` gives the
classifier a pipeline's model with the functions that turn a valid record into a staged row.
"""

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import orjson
from pydantic import (
    AfterValidator,
    AliasPath,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    create_model,
)
from pydantic_core import PydanticCustomError

from capstone.fates import Reason
from capstone.jsontext import has_non_finite
from capstone.spec import (
    EVENT_FIELDS,
    INT64_MAX,
    INT64_MIN,
    MAX_TEXT_LENGTH,
    FieldSpec,
    PipelineSpec,
)
from capstone.timeformats import in_zone, parser
from capstone.timeutil import to_utc_naive

__all__ = [
    "INT64_MAX",
    "Event",
    "RecordShape",
    "build_model",
    "iso_text_only",
    "no_separators",
    "number_not_bool",
    "reasons_from_error",
    "shape_of",
]


def number_not_bool(value: Any) -> Any:
    if type(value) is float:  # the common case first: this runs for every record
        if not math.isfinite(value):
            raise ValueError("NaN and Infinity are not allowed")
        return value
    # bool is an int subclass, so pydantic would read true as 1.0; an event value never means that.
    if isinstance(value, bool):
        raise ValueError("booleans are not numbers")
    if isinstance(value, str) and "_" in value:
        no_separators(value)
    return value


def no_separators(text: str) -> None:
    """Python, and so pydantic, reads "1_000" as 1000; in a data file that is a typo or a code."""
    try:
        float(text)
    except ValueError:
        return  # not a number with or without them: pydantic says what is wrong
    raise ValueError("digit separators (_) are not part of a number")


def iso_text_only(value: Any) -> Any:
    # pydantic would read a number, or digits as text, as Unix seconds; capstone promises
    # ISO-8601 text only, which always starts with a four-digit year and a dash.
    if not isinstance(value, str) or value[4:5] != "-":
        raise ValueError("must be an ISO-8601 timestamp string such as 2025-01-15T09:30:00")
    return value


Text = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_LENGTH)
]


class Event(BaseModel):
    """One event: key, name, value, ts. Unknown fields are kept in `model_extra`."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, frozen=True)

    key: Text
    name: Text
    value: Annotated[float, BeforeValidator(number_not_bool)]
    ts: Annotated[datetime, BeforeValidator(iso_text_only), AfterValidator(to_utc_naive)]


def reasons_from_error(
    error: ValidationError, paths: dict[tuple[str | int, ...], str] | None = None
) -> list[Reason]:
    """One reason per failing field: code `field.type` and a message naming the field (a field
    read from a `path` by its own name, found in `paths`)."""
    reasons: list[Reason] = []
    for item in error.errors(include_url=False):
        loc = item["loc"]
        field = (paths and paths.get(loc)) or ".".join(str(part) for part in loc) or "record"
        kind = "invalid" if item["type"] == "value_error" else item["type"]
        message = item["msg"].removeprefix("Value error, ")
        reasons.append((f"{field}.{kind}", f"{field}: {message}"))
    return reasons


# -- generated models ----------------------------------------------------------------------------


def _not_allowed(allowed: tuple[Any, ...]) -> Callable[[Any], Any]:
    choices = ", ".join(repr(a) for a in allowed)

    def check(value: Any) -> Any:
        if value not in allowed:
            raise PydanticCustomError(
                "not_allowed", "must be one of {choices}", {"choices": choices}
            )
        return value

    return check


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


_COMMA_DECIMAL = str.maketrans(",.", ".,")


def _decimal_comma(value: Any) -> Any:
    # The marks trade places: "3,14" reads as 3.14, and a "." (a thousands separator where the
    # comma is the decimal mark, so "1.234" means 1234) fails to parse instead of passing as 1.234.
    return value.translate(_COMMA_DECIMAL) if type(value) is str else value


def _annotation(spec: FieldSpec, decimal: str = ".") -> Any:
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
        if decimal == ",":
            metadata.insert(0, BeforeValidator(_decimal_comma))
    elif spec.type == "boolean":
        base = bool
    elif spec.type == "timestamp":
        base = datetime
        metadata.append(BeforeValidator(parser(spec.format, spec.timezone) or iso_text_only))
        if spec.timezone is not None:
            metadata.append(AfterValidator(in_zone(spec.timezone)))
        metadata.append(AfterValidator(to_utc_naive))
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
        where = (
            Field(default, alias=name)
            if field.path_parts is None
            else Field(default, validation_alias=AliasPath(*field.path_parts))
        )
        definitions[f"f{index}"] = (_annotation(field, spec.decimal), where)
    if spec.unknown != "drop":
        # A path reads inside an object without taking it: the object is the record's still,
        # kept in `attributes` (or, refusing unknown fields, known rather than refused).
        for index, root in enumerate(path_roots(spec)):
            definitions[f"r{index}"] = (Any, Field(None, alias=root))
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


def path_roots(spec: PipelineSpec) -> tuple[str, ...]:
    """The record keys that paths read inside of, and that no field reads whole."""
    roots = dict.fromkeys(
        field.path_parts[0] for field in spec.fields.values() if field.path_parts is not None
    )
    whole = {name for name, field in spec.fields.items() if field.path_parts is None}
    return tuple(root for root in roots if root not in whole)


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
    read_time: Callable[[Any], datetime] | None = None
    """The event time field's own reading of a raw value (its format and zone), if it has one."""
    paths: dict[tuple[str | int, ...], str] | None = None
    """The fields read from a path, by where pydantic says an error is."""
    kept_roots: tuple[tuple[str, str], ...] = ()
    """(model attribute, record key) of objects paths read inside, to keep in `attributes`."""

    def extra(self, record: Any) -> dict[str, Any] | None:
        """The fields of a valid record kept in `attributes`."""
        extra: dict[str, Any] | None = record.model_extra
        if not self.kept_roots:
            return extra
        data = record.__dict__
        roots = {key: data[name] for name, key in self.kept_roots if data[name] is not None}
        return {**(extra or {}), **roots} or None

    def raw_value(self, record: dict[str, Any], name: str) -> Any:
        """A field's value in a raw record, following its path."""
        parts = self.spec.fields[name].path_parts
        if parts is None:
            return record.get(name)
        value: Any = record
        for part in parts:
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value

    def loose_key(self, record: dict[str, Any]) -> str | None:
        """A best-effort key for a record that failed validation (None when it has none), written
        as the model would have written it, so `capstone lineage KEY` finds the reject too."""
        parts: list[Any] = []
        for name in self.spec.key:
            value = self.raw_value(record, name)
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
        """A rejected record's event time as ISO text, when it has a readable one."""
        value = self.raw_value(record, self.spec.event_time)
        if self.read_time is None:
            return value if isinstance(value, str) else None
        try:
            return to_utc_naive(self.read_time(value)).isoformat()
        except (ValueError, OverflowError):  # pydantic's errors are ValueErrors
            return None


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
        and spec.decimal == "."
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

    when = spec.fields[spec.event_time]
    read_time = _reader(when.format, when.timezone)
    paths: dict[tuple[str | int, ...], str] = {
        field.path_parts: name
        for name, field in spec.fields.items()
        if field.path_parts is not None
    }
    kept = (
        tuple((f"r{i}", root) for i, root in enumerate(path_roots(spec)))
        if spec.unknown == "keep"
        else ()
    )
    return RecordShape(
        spec,
        model,
        values,
        event_time,
        lineage_key,
        read_time=read_time,
        paths=paths or None,
        kept_roots=kept,
    )


def _reader(fmt: str | None, timezone: str | None) -> Callable[[Any], datetime] | None:
    """How a field of this format and zone reads a raw value; None for plain ISO text in UTC."""
    parse = parser(fmt, timezone)
    if parse is None and timezone is None:
        return None
    zone = None if timezone is None else in_zone(timezone)

    def read(value: Any) -> datetime:
        moment = parse(value) if parse is not None else datetime.fromisoformat(iso_text_only(value))
        return moment if zone is None else zone(moment)

    return read
