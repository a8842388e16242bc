"""A pipeline drafted from a sample file: `capstone init --from FILE`.

The first records of the file (any format capstone reads, compressed or not) are read as the
pipeline would read them, each field's type is inferred from every value the sample holds, and
the key and event time are proposed from names and values when not given. The draft is a
commented TOML table a person checks before the first real run; the rule it follows is that
loading the sample with it rejects nothing, so every choice errs towards the wider type.
"""

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any

from capstone.errors import ConfigError, InputError
from capstone.fates import RESERVED_COLUMNS, RESERVED_FIELDS
from capstone.sources import SourceFile, parse_object
from capstone.spec import BUILTIN, IDENTIFIER, INT64_MAX, INT64_MIN, PipelineSpec

__all__ = ["DEFAULT_SAMPLE", "Choice", "Draft", "draft_pipeline", "pipeline_name"]

DEFAULT_SAMPLE = 10_000
"""Records read when no --sample is given."""

_DELIMITERS = (",", ";", "\t", "|")
_LAYOUTS = (
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%Y/%m/%d %H:%M:%S",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%d/%m/%Y",
)
"""strptime layouts a timestamp written as text may follow when it is not ISO-8601."""
_TIME_NAMES = ("ts", "event_time", "updated_at", "modified_at", "created_at", "timestamp", "time")
_KEY_NAMES = ("id", "key", "uuid", "event_id")
_INTEGER_TEXT = re.compile(r"[+-]?\d+")
_FLOAT_TEXT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")
_COMMA_FLOAT_TEXT = re.compile(r"[+-]?\d+,\d+")
_EPOCH_RANGES = (
    ("epoch_s", 10**8, 10**10),
    ("epoch_ms", 10**11, 10**13),
    ("epoch_us", 10**14, 10**16),
    ("epoch_ns", 10**17, 10**19),
)
"""Magnitudes of epochs between 1973 and 2286 in each unit: a number in one reads as a time."""


@dataclass
class _Seen:
    """What the sample holds for one field: how often it is there, the kinds of its values, its
    distinct texts and numbers, and the time layouts every text fits so far."""

    present: int = 0
    kinds: set[str] = field(default_factory=set)
    values: set[str | int] = field(default_factory=set)
    layouts: set[str] | None = None

    def add(self, value: Any) -> None:
        self.present += 1
        kind = _kind(value)
        self.kinds.add(kind)
        if kind in ("text", "integer"):
            if kind == "text" and value not in self.values:
                fitting = {layout for layout in (self.layouts or _LAYOUTS) if _fits(value, layout)}
                self.layouts = fitting if self.layouts is None else self.layouts & fitting
            self.values.add(value)

    @property
    def distinct(self) -> bool:
        """Whether no value repeats (only text and whole numbers can name a record)."""
        return self.kinds <= {"text", "integer"} and len(self.values) == self.present

    @property
    def texts(self) -> list[str]:
        return [v for v in self.values if isinstance(v, str)]

    @property
    def numbers(self) -> list[int]:
        return [int(v) for v in self.values if isinstance(v, int) or _INTEGER_TEXT.fullmatch(v)]


@dataclass(frozen=True)
class Choice:
    """One field of the draft, with why it was chosen."""

    name: str
    settings: dict[str, Any]
    why: str


@dataclass(frozen=True)
class Draft:
    """A drafted pipeline: its spec, the fields as chosen, and what was left out and why."""

    spec: PipelineSpec
    records: int
    fields: list[Choice]
    notes: list[str]
    key_why: str
    event_time_why: str

    def toml(self, source: str) -> str:
        """The pipeline as a commented TOML table, to append to capstone.toml."""
        spec = self.spec
        lines = [
            "",
            f"# Drafted by `capstone init --from {source}` from {self.records:,} records;",
            "# check the types and constraints before the first real run.",
            f"[pipelines.{spec.name}]",
            f"key = {_toml_list(spec.key)}  # {self.key_why}",
            f'event_time = "{spec.event_time}"  # {self.event_time_why}',
            'unknown = "keep"  # fields the sample did not show are kept as JSON in `attributes`',
        ]
        if spec.delimiter is not None:
            lines.append(f"delimiter = {_toml_text(spec.delimiter)}")
        if spec.decimal != ".":
            lines.append(f'decimal = "{spec.decimal}"')
        lines += ["", f"[pipelines.{spec.name}.fields]"]
        for choice in self.fields:
            settings = ", ".join(f"{k} = {_toml_value(v)}" for k, v in choice.settings.items())
            lines.append(f"{choice.name} = {{ {settings} }}  # {choice.why}")
        lines += [f"# {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def pipeline_name(path: str) -> str:
    """A pipeline name from a file name: `events-2025-01.jsonl.gz` gives `events_2025_01`
    (`events.parquet`, the built-in pipeline's name, gives `events_feed`)."""
    stem = path.replace("\\", "/").rsplit("/", 1)[-1].split(".", 1)[0]
    name = re.sub(r"[^A-Za-z0-9_]+", "_", stem).strip("_").lower() or "feed"
    name = f"p_{name}" if name[0].isdigit() else name[:58]
    return f"{name}_feed" if name == BUILTIN else name


def draft_pipeline(
    path: str,
    *,
    name: str | None = None,
    key: Sequence[str] = (),
    event_time: str | None = None,
    sample: int = DEFAULT_SAMPLE,
    delimiter: str | None = None,
) -> Draft:
    """Draft a pipeline from the first `sample` records of `path`; ConfigError when no key or
    event time can be proposed (or the given ones do not fit), InputError when it cannot be read."""
    if name == BUILTIN:
        raise ConfigError(
            f"{BUILTIN!r} is the built-in pipeline; give the draft another --pipeline"
        )
    name = name or pipeline_name(path)
    with SourceFile(path) as probe:
        is_csv = probe.format == "csv"
    if is_csv and delimiter is None:
        delimiter = _sniff_delimiter(path)
    records = list(islice(_records(path, delimiter), sample))
    if not records:
        raise InputError(f"{path} holds no record to draft a pipeline from")
    seen: dict[str, _Seen] = {}
    for record in records:
        for field_name, value in record.items():
            if value is None or (is_csv and value == ""):
                continue
            seen.setdefault(field_name, _Seen()).add(value)
    notes: list[str] = []
    usable = {n: s for n, s in seen.items() if _usable(n, notes)}
    comma = is_csv and delimiter != "," and _any_comma_floats(usable.values())
    choices = {
        n: _choose(n, s, len(records), text_cells=is_csv, comma=comma) for n, s in usable.items()
    }
    key = tuple(key) or _propose_key(choices, usable, len(records))
    event_time = event_time or _propose_event_time(choices, len(records))
    for part in (*key, event_time):
        if part not in choices:
            raise ConfigError(
                f"{part!r} is not a field of the sample's records (fields: "
                f"{', '.join(choices) or 'none'}); check --key and --event-time"
            )
    key_why = _key_why(key, usable, len(records))
    event_time_why = _event_time_why(choices[event_time])
    _settle_key_and_time(choices, key, event_time, len(records))
    fields = list(choices.values())
    definition: dict[str, Any] = {
        "name": name,
        "key": list(key),
        "event_time": event_time,
        "unknown": "keep",
        "fields": {c.name: c.settings for c in fields},
    }
    if is_csv and delimiter not in (None, ","):
        definition["delimiter"] = delimiter
    if comma:
        definition["decimal"] = ","
    try:
        spec = PipelineSpec.model_validate(definition)
    except ValueError as error:
        raise ConfigError(f"the drafted pipeline is not valid: {error}") from None
    return Draft(spec, len(records), fields, notes, key_why, event_time_why)


# -- reading ------------------------------------------------------------------------------------


def _records(path: str, delimiter: str | None) -> Iterable[dict[str, Any]]:
    with SourceFile(path, delimiter=delimiter) as source:
        for _, raw, parsed in source.records():
            record = parse_object(raw) if parsed is None else parsed
            if isinstance(record, dict):
                yield record


def _sniff_delimiter(path: str) -> str:
    """The delimiter that splits the header into the most columns (a comma on a tie)."""
    with SourceFile(path, format="csv") as source:
        header = source.head().split(b"\n", 1)[0].decode("utf-8", "replace")
    widths = {d: len(next(csv.reader(io.StringIO(header), delimiter=d), [])) for d in _DELIMITERS}
    return max(_DELIMITERS, key=lambda d: (widths[d], d == ","))


# -- types --------------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer" if INT64_MIN <= value <= INT64_MAX else "big"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "text"
    return "json"


def _fits(text: str, layout: str) -> bool:
    try:
        datetime.strptime(text.strip(), layout)
    except ValueError:
        return False
    return True


def _is_iso(text: str) -> bool:
    if text[4:5] != "-":
        return False
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _any_comma_floats(fields: Iterable[_Seen]) -> bool:
    return any(
        s.kinds == {"text"} and any(_COMMA_FLOAT_TEXT.fullmatch(v) for v in s.texts) for s in fields
    )


def _choose(name: str, seen: _Seen, records: int, *, text_cells: bool, comma: bool) -> Choice:
    """The narrowest type every sampled value of the field passes, and why."""
    settings: dict[str, Any] = {}
    kinds = seen.kinds
    if kinds == {"boolean"}:
        kind, why = "boolean", "true/false in every record"
    elif kinds == {"integer"} and (epoch := _epoch_unit(name, seen.numbers)):
        kind, why = "timestamp", f"numbers of {epoch} in a field named like a time"
        settings["format"] = epoch
    elif kinds == {"integer"}:
        kind, why = "integer", "whole numbers"
    elif kinds <= {"integer", "float"}:
        kind, why = "float", "numbers"
    elif kinds == {"text"}:
        kind, why, extra = _text_type(name, seen, text_cells=text_cells, comma=comma)
        settings.update(extra)
    else:
        kind, why = (
            "json",
            f"objects, lists or values of several kinds ({', '.join(sorted(kinds))})",
        )
    settings = {"type": kind, **settings}
    missing = records - seen.present
    if missing:
        settings["required"] = False
        why += f"; missing or empty in {missing:,} of {records:,} records"
    return Choice(name, settings, why)


def _text_type(
    name: str, seen: _Seen, *, text_cells: bool, comma: bool
) -> tuple[str, str, dict[str, Any]]:
    """The type of a field whose every value is text: in a CSV, text may spell any type."""
    texts = seen.texts
    if all(_is_iso(v) for v in texts):
        return "timestamp", "ISO-8601 times", {}
    if seen.layouts:
        layout = next(layout for layout in _LAYOUTS if layout in seen.layouts)
        return "timestamp", f"times written as {layout}", {"format": layout}
    if not text_cells:
        return "string", "text", {}
    if all(_INTEGER_TEXT.fullmatch(v) for v in texts):
        if epoch := _epoch_unit(name, seen.numbers):
            return (
                "timestamp",
                f"numbers of {epoch} in a field named like a time",
                {"format": epoch},
            )
        return "integer", "whole numbers", {}
    if not comma and all(_FLOAT_TEXT.fullmatch(v) for v in texts):
        return "float", "numbers", {}
    if comma and all(_COMMA_FLOAT_TEXT.fullmatch(v) or _INTEGER_TEXT.fullmatch(v) for v in texts):
        return "float", "numbers with decimal commas", {}
    if all(v.lower() in ("true", "false") for v in texts):
        return "boolean", "true/false in every record", {}
    return "string", "text", {}


def _epoch_unit(name: str, numbers: Sequence[int]) -> str | None:
    if not numbers or not _named_like_time(name):
        return None
    for unit, low, high in _EPOCH_RANGES:
        if all(low <= n < high for n in numbers):
            return unit
    return None


def _named_like_time(name: str) -> bool:
    lowered = name.lower()
    return lowered in _TIME_NAMES or lowered.endswith(("_at", "_time", "_ts", "time"))


def _usable(name: str, notes: list[str]) -> bool:
    """Whether a field can be a column; the others stay in `attributes` (unknown = "keep")."""
    if not IDENTIFIER.fullmatch(name):
        notes.append(f"{name!r} is not a column name; it is kept in `attributes` as it comes")
        return False
    if name.lower() in RESERVED_COLUMNS or name.lower() in RESERVED_FIELDS:
        notes.append(f"{name!r} is a name capstone uses; it is kept in `attributes`")
        return False
    return True


# -- key and event time -------------------------------------------------------------------------


def _propose_key(choices: dict[str, Choice], seen: dict[str, _Seen], records: int) -> tuple[str]:
    # A field named like an id may repeat: in an event feed a key's later events update it, so
    # its repeats are what a key looks like. Any other field must be unique in the sample.
    candidates = [
        name
        for name, choice in choices.items()
        if choice.settings["type"] in ("string", "integer")
        and seen[name].present == records
        and seen[name].kinds <= {"text", "integer"}
        and (seen[name].distinct or (_named_like_id(name) and len(seen[name].values) > 1))
    ]
    if not candidates:
        raise ConfigError(
            "no field of the sample is present and unique in every record, so no key can be "
            "proposed; name it with --key FIELD (several for a composite key)"
        )
    return (min(candidates, key=lambda n: (not _named_like_id(n), list(choices).index(n))),)


def _named_like_id(name: str) -> bool:
    lowered = name.lower()
    return lowered in _KEY_NAMES or lowered.endswith(("_id", "_key", "_uuid"))


def _propose_event_time(choices: dict[str, Choice], records: int) -> str:
    times = [
        name
        for name, choice in choices.items()
        if choice.settings["type"] == "timestamp" and choice.settings.get("required", True)
    ]
    if not times:
        raise ConfigError(
            "no field of the sample holds a time in every record, so no event time can be "
            "proposed; name it with --event-time FIELD"
        )
    return min(times, key=lambda n: (not _named_like_time(n), list(choices).index(n)))


def _key_why(key: Sequence[str], seen: dict[str, _Seen], records: int) -> str:
    if len(key) > 1:
        return "given"
    part = seen.get(key[0])
    unique = part is not None and part.distinct and part.present == records
    if unique:
        why = f"unique in all {records:,} records"
    elif part is not None and part.present == records and _named_like_id(key[0]):
        why = (
            f"{len(part.values):,} values in {records:,} records: a key's later events update "
            "it (newest event time wins)"
        )
    else:
        why = "given (not unique in the sample)"
    return why + (", named like an id" if _named_like_id(key[0]) else "")


def _event_time_why(choice: Choice) -> str:
    return f"a timestamp in every record ({choice.why.split(';')[0]})"


def _settle_key_and_time(
    choices: dict[str, Choice], key: Sequence[str], event_time: str, records: int
) -> None:
    """The key and the event time must be required, and of the types they may have."""
    for part in key:
        choice = choices[part]
        if choice.settings.get("required", True) is False:
            raise ConfigError(
                f"key field {part!r} is missing in some of the sample's records; choose "
                "another --key"
            )
        if choice.settings["type"] not in ("string", "integer"):
            choices[part] = Choice(part, {"type": "string"}, "the key, as text")
    when = choices[event_time]
    if when.settings["type"] != "timestamp" or when.settings.get("required", True) is False:
        raise ConfigError(
            f"event time {event_time!r} is not a time in every record of the sample "
            f"({when.why}); choose another --event-time"
        )
    if event_time in key:
        raise ConfigError("the event time cannot be part of the key; choose another --key")


# -- TOML ---------------------------------------------------------------------------------------


def _toml_text(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\t", "\\t") + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _toml_text(value)
    return str(value)


def _toml_list(names: Sequence[str]) -> str:
    if len(names) == 1:
        return _toml_text(names[0])
    return "[" + ", ".join(_toml_text(n) for n in names) + "]"
