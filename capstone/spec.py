"""Pipeline definitions: what a pipeline's records look like (fields, key, event time) and its
settings.

The built-in `events` pipeline is the seed's shape (key, name, value, ts); a `capstone.toml`
declares others. A definition is checked by Pydantic here; `model` turns it into a record model,
and `store.tables` compares it with the one stored in the database before a run.
"""

import math
import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    TypeAdapter,
    field_validator,
    model_validator,
)
from pydantic_core import SchemaError

from capstone._jsonarray import MAX_RECORD_BYTES
from capstone.errors import ConfigError
from capstone.fates import RESERVED_COLUMNS, RESERVED_FIELDS, StagingLayout
from capstone.jsontext import dumps_exact
from capstone.limits import MaxRejects
from capstone.timeformats import EPOCH_UNITS, check_format, check_timezone
from capstone.timeutil import parse_duration

__all__ = [
    "EVENTS",
    "MAX_TEXT_LENGTH",
    "Duration",
    "FieldSpec",
    "FieldType",
    "PipelineSpec",
    "Ties",
    "lineage_key_from_parts",
]

MAX_TEXT_LENGTH = 256
"""Longest `key` or `name` of the seed's shape; longer ones are rejected, never truncated."""
MAX_LENGTH_SETTING = 2**30
"""Largest `min_length` or `max_length` (characters): beyond any record capstone can hold."""
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""The integers the databases store; integer settings (bounds, allowed values) stay within."""

FieldType = Literal["string", "integer", "float", "boolean", "timestamp", "json"]
Unknown = Literal["keep", "reject", "drop"]
Ties = Literal["keep", "replace"]
"""What a record with the same event time as the stored row does: `keep` the stored row (the
strict guard), or `replace` it (a corrected re-delivery wins)."""

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
TOMBSTONES = "__tombstones"


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


def _tab(value: Any) -> Any:
    # A TOML "\t" is already a tab; the word and the two characters are what a shell passes.
    return "\t" if value in ("tab", "\\t") else value


def _one_delimiter(value: str) -> str:
    if (
        len(value) != 1
        or value in '"\r\n'
        or value.isalnum()
        or (value.isspace() and value != "\t")
    ):
        raise ValueError(
            f"delimiter {value!r} must be one character other than a letter, digit, quote, "
            'space or line break (a tab is "\\t" or tab)'
        )
    return value


Delimiter = Annotated[str, BeforeValidator(_tab), AfterValidator(_one_delimiter)]
"""A CSV delimiter: one character, `tab` or `\\t` for a tab."""


_PATH_KEY = re.compile(r'"((?:[^"\\]|\\.)*)"|([^."]+)')


def path_keys(path: str) -> tuple[str, ...]:
    """The keys of a field's `path`: `actor.login` is ("actor", "login"), and a quoted key may
    hold dots, `payload."ref.name"`; ValueError when the path does not read so."""
    keys: list[str] = []
    position = 0
    while True:
        found = _PATH_KEY.match(path, position)
        if found is None:
            raise ValueError(
                f"path {path!r} is not keys joined by dots (actor.login; quote a key that holds "
                'a dot: payload."ref.name")'
            )
        quoted, plain = found.groups()
        keys.append(re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else plain)
        position = found.end()
        if position == len(path):
            return tuple(keys)
        if path[position] != "." or position + 1 == len(path):
            raise ValueError(
                f"path {path!r} is not keys joined by dots (actor.login; quote a key that holds "
                'a dot: payload."ref.name")'
            )
        position += 1


def parse_delimiter(value: str) -> str:
    """A delimiter given on the command line; ConfigError naming `--delimiter` if it is none."""
    try:
        return _one_delimiter(_tab(value))
    except ValueError as error:
        raise ConfigError(f"--{error}") from None


"""A span of time from "90s", "2h", "1h30m" or a number of seconds; never negative, since a
negative lookback would skip records newer than the watermark."""


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number")
    return value


Number = Annotated[int | float, PlainValidator(_number)]
"""A bound as written: an integer stays an int (a float would lose precision above 2**53, in
the stored definition too); a number with a fraction or an exponent is a float."""


class FieldSpec(BaseModel):
    """One field of a record: its type and the constraints a valid value meets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: FieldType
    required: bool = True
    min: Number | None = None
    max: Number | None = None
    min_length: int | None = Field(None, ge=0, le=MAX_LENGTH_SETTING)
    max_length: int | None = Field(None, ge=1, le=MAX_LENGTH_SETTING)
    pattern: str | None = None
    allowed: tuple[str | int | float, ...] | None = Field(None, min_length=1)
    format: str | None = None
    """How a timestamp is written: epoch_s, epoch_ms, epoch_us, epoch_ns, or a strptime
    layout (default: ISO-8601 text)."""
    timezone: str | None = None
    """The zone of timestamps written without an offset (default: UTC)."""
    path: str | None = None
    """Where in the record the value is, when not at the top under the field's name:
    `actor.login`; a key holding a dot is quoted, `payload."ref.name"`."""

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        return None if value is None else check_format(value)

    @field_validator("path")
    @classmethod
    def _readable_path(cls, value: str | None) -> str | None:
        if value is not None:
            path_keys(value)
        return value

    @property
    def path_parts(self) -> tuple[str, ...] | None:
        """The object keys of `path`, outermost first; None when the field has no path."""
        return None if self.path is None else path_keys(self.path)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        return None if value is None else check_timezone(value)

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
        if (self.format is not None or self.timezone is not None) and self.type != "timestamp":
            raise ValueError(f"format and timezone apply to timestamp fields, not {self.type}")
        if self.timezone is not None and self.format in EPOCH_UNITS:
            raise ValueError(f"an epoch ({self.format}) is in UTC by definition; drop timezone")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if any(bound is not None and not math.isfinite(bound) for bound in (self.min, self.max)):
            raise ValueError("min and max must be finite numbers")
        numbers = (self.min, self.max, *(self.allowed or ()))
        if any(type(n) is int and not INT64_MIN <= n <= INT64_MAX for n in numbers):
            raise ValueError(
                f"integers in settings run from {INT64_MIN} to {INT64_MAX} (64 bits, what the "
                "databases store)"
            )
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
    ties: Ties = "keep"
    delete_field: str | None = None
    """A boolean field that, when true, makes a record a tombstone: applied, it removes its key
    from the target and is kept in the pipeline's tombstone table, so no older record brings the
    key back."""
    lookback: Duration = timedelta(0)
    future_tolerance: Duration = timedelta(days=1)
    max_rejects: MaxRejects | None = None
    """More rejects than this in a file fail its run, keeping nothing (default: no limit)."""
    keep_lineage: Duration | None = None
    """Prune the pipeline's lineage older than this after each successful run (default: keep
    it all); see `capstone.retention`."""
    delimiter: Delimiter | None = None
    """The CSV delimiter (default: a tab for `.tsv` files, else a comma)."""
    decimal: Literal[".", ","] = "."
    """The decimal mark of float fields written as text (`,` for `3,14`)."""
    max_record_bytes: int = Field(MAX_RECORD_BYTES, ge=1024, le=1 << 30)
    """The size cap of one record (a line, a row, an element); a file holding a larger one
    fails, found before the record is held whole where the format allows."""

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
        if self.target.lower().endswith(TOMBSTONES):
            raise ValueError(f"target {self.target!r} ends as capstone's tombstone tables do")
        if not self.fields:
            raise ValueError("declare at least the key and event_time fields")
        for name in self.fields:
            if not IDENTIFIER.fullmatch(name):
                hint = (
                    f"; to read a nested value, name the column and give the path: "
                    f'{name.rsplit(".", 1)[-1]} = {{ type = ..., path = "{name}" }}'
                    if "." in name
                    else ""
                )
                raise ValueError(
                    f"field {name!r} is not a column name: use letters, digits and _{hint}"
                )
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
            raise ValueError(
                f"event_time field {self.event_time!r} must be a required timestamp (for epoch "
                'numbers: type = "timestamp", format = "epoch_ms", or epoch_s, epoch_us, epoch_ns)'
            )
        if self.event_time in self.key:
            raise ValueError("event_time cannot be part of the key")
        if self.delete_field is not None:
            marker = self.fields.get(self.delete_field)
            if marker is None or marker.type != "boolean" or self.delete_field in self.key:
                raise ValueError(
                    f"delete_field {self.delete_field!r} must name a declared boolean field "
                    "outside the key"
                )
            if len(self.tombstones) > 63:
                raise ValueError(
                    f"target {self.target!r} is too long for its tombstone table "
                    f"{self.tombstones!r} (63 characters at most); choose a shorter target"
                )
        return self

    @property
    def tombstones(self) -> str:
        """The table of the keys this pipeline's tombstones removed, with their event times."""
        return self.target + TOMBSTONES

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
        return self.model_dump_json(exclude=_READ_SETTINGS)


_READ_SETTINGS = {
    "name",
    "lookback",
    "future_tolerance",
    "max_rejects",
    "keep_lineage",
    "delimiter",
    "decimal",
    "max_record_bytes",
}
"""Settings of how files are read, not of what the table holds: changing one changes no table."""

EVENTS = PipelineSpec(name=BUILTIN, target="target")
"""The seed's pipeline: key, name, value, ts, into the table `target`."""


def lineage_key_from_parts(parts: Sequence[str], spec: PipelineSpec | None = None) -> str:
    """The lineage text of a key: its single part, or the parts typed and joined as the pipeline
    `spec` writes them (a JSON array for a composite key)."""
    if spec is None:
        if len(parts) != 1:
            raise ConfigError("a key of several parts needs --pipeline to say whose key it is")
        return parts[0]
    if len(parts) != len(spec.key):
        raise ConfigError(
            f"pipeline {spec.name!r} has a key of {len(spec.key)} part(s) "
            f"({', '.join(spec.key)}); give {len(spec.key)} value(s), not {len(parts)}"
        )
    typed: list[str | int] = []
    for name, part in zip(spec.key, parts, strict=True):
        if spec.fields[name].type == "integer":
            try:
                typed.append(int(part))
            except ValueError:
                raise ConfigError(f"key field {name!r} is an integer, not {part!r}") from None
        else:
            typed.append(part)
    return spec.lineage_key(tuple(typed))
