"""Validating: every parsed record gets a fate, decided in input order.

1. Not a JSON object: rejected as malformed.
2. Otherwise validated by the pipeline's record model: staged, or rejected with one reason per
   field. In a CSV row the cells of json fields are parsed as JSON text first; one that does not
   parse is a reason too (`FIELD.json_invalid`).

Nothing is skipped here, and nothing here depends on the watermark, so that a file can be
validated before the run before it has committed (`pipeline` reads the next file of a feed while
the writer merges). `mark_behind` then marks, in the writer, a record at or below the watermark
(counted in `Batch.behind`) or, rejected, at or below `watermark - lookback` (`Rejected.behind`);
the store skips it only when it can prove an earlier run had it: the target holds its key at the
same or a later event time, or its dead letter exists. Anything else behind the watermark is
late, and loads like any record.
"""

import csv
import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError

from capstone.errors import InputError
from capstone.fates import (
    CELLS_FIELD,
    DEAD_LETTER_FIELD,
    RAW_FIELD,
    Batch,
    Reason,
    Rejected,
    Screen,
)
from capstone.jsontext import has_non_finite, loads_exact
from capstone.model import INT64_MAX, RecordShape, reasons_from_error, shape_of
from capstone.sources import HeaderCheck, Item, Malformed, parse_object
from capstone.spec import EVENTS, MAX_TEXT_LENGTH, PipelineSpec
from capstone.timeutil import EPOCH, MICROSECOND, parse_ts

__all__ = ["Classifier", "mark_behind"]


def _text(raw: bytes | str) -> str:
    return raw if isinstance(raw, str) else raw.decode("utf-8", "backslashreplace")


def _loose_ts(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_ts(value)
    except (ValueError, OverflowError):
        return None


class Classifier:
    """Decides fates against one run's future limit.

    With `replay=True` (replays of dead letters, which are late by definition) nothing is skipped
    and each record's `_dead_letter` field is taken off and remembered for resolution. With
    `csv=True` (where every value is text) the cells of json fields are parsed as JSON first, so
    a row means what the same record written as JSON means.
    """

    def __init__(
        self,
        future_limit: datetime,
        *,
        replay: bool = False,
        screen: Screen | None = None,
        shape: RecordShape | None = None,
        csv: bool = False,
    ) -> None:
        self.shape = shape or shape_of(EVENTS)
        self.json_cells = self.shape.json_fields if csv else ()
        self.future_limit = future_limit
        self.replay = replay
        self.screen = screen
        self._seq = 0
        self._claimed: set[int] = set()  # dead letters a record of this replay has spoken for

    def classify(self, items: Sequence[Item], seq_from: int | None = None) -> Batch:  # noqa: PLR0915 - one hot loop; helpers cost a call per record
        """Sort one batch of items into staged, rejected and skipped, preserving input order.

        Staged rows are numbered (`seq`, the order the merge applies them in) on from the last
        batch's, or from `seq_from` when given: batches classified in two processes number
        their rows from their batch's place in the file, so that both agree without talking."""
        if seq_from is not None:
            self._seq = seq_from
        batch = Batch()
        staged = batch.staged
        future_limit, replay = self.future_limit, self.replay
        shape, json_cells = self.shape, self.json_cells
        # The model's validator itself: model_validate_json is a Python wrapper around it that
        # costs as much per record as one of the field validators.
        validator = shape.model.__pydantic_validator__
        validate, validate_json = validator.validate_python, validator.validate_json
        values, event_time, lineage_key = shape.values, shape.event_time, shape.lineage_key
        key_column = not shape.spec.text_key
        dumps, sort_keys = orjson.dumps, orjson.OPT_SORT_KEYS
        with_cells = bool(json_cells) or replay  # CSV cells, or a replay's `_cells`
        # Dropped unknown fields leave no trace in the model: look for an export's ids in the text.
        ids_dropped = shape.spec.unknown == "drop" and not replay
        # A record that is not staged gets lineage under its key cut like an invalid record's:
        # a longer key may not fit an index (PostgreSQL's hold about 2.7 KB).
        cut = MAX_TEXT_LENGTH
        for position, raw, parsed in items:
            record: dict[str, Any] | Malformed | None = (
                parse_object(raw) if parsed is None and replay else parsed
            )
            if isinstance(record, Malformed):
                batch.rejected.append(
                    Rejected(
                        position,
                        None,
                        _text(raw),
                        [(record.code, record.message)],
                        replayed=self._claim(record.letter),
                    )
                )
                continue
            replayed = None
            if replay and record:
                dead_letter = record.pop(DEAD_LETTER_FIELD, None)
                if dead_letter is not None and not (
                    type(dead_letter) is int and 0 < dead_letter <= INT64_MAX
                ):
                    reason = (
                        f"{DEAD_LETTER_FIELD}.not_an_id",
                        f"{DEAD_LETTER_FIELD}: {dead_letter!r} is not a dead letter's id; keep "
                        "the number the export wrote",
                    )
                    batch.rejected.append(Rejected(position, None, _text(raw), [reason], record))
                    continue
                replayed = self._claim(dead_letter)
                # An export's line that never parsed: its text stands for the record. (A `_raw`
                # beside other fields is data, an extra field like any other.)
                text = record.get(RAW_FIELD)
                if len(record) == 1 and type(text) is str:
                    raw = text  # noqa: PLW2901 - the text the export carried stands for the line
                    record = parse_object(raw)
                    if isinstance(record, Malformed):
                        reasons = [(record.code, record.message)]
                        batch.rejected.append(
                            Rejected(position, None, raw, reasons, replayed=replayed)
                        )
                        continue
                    # The text was itself an export line (broken while being fixed): its id is
                    # never data, and names the letter when the outer one is spoken for.
                    inner = record.pop(DEAD_LETTER_FIELD, None)
                    if replayed is None and type(inner) is int and 0 < inner <= INT64_MAX:
                        replayed = self._claim(inner)
            unparsed = (
                self._unparsed_cells(record, json_cells)
                if with_cells and record is not None
                else None
            )
            try:
                # Unparsed JSON text goes straight to pydantic's parser: one pass, no dict.
                event = validate(record) if record is not None else validate_json(raw)
            except ValidationError as error:
                if record is None:
                    record = parse_object(raw)
                    if isinstance(record, Malformed):
                        batch.rejected.append(
                            Rejected(position, None, _text(raw), [(record.code, record.message)])
                        )
                        continue
                if not replay and DEAD_LETTER_FIELD in record:
                    _refuse_export(position)
                reasons = reasons_from_error(error, shape.paths)
                self._refuse(batch, position, raw, record, unparsed or {}, reasons, replayed)
                continue
            if unparsed:
                assert record is not None  # only a parsed record has cells
                self._refuse(batch, position, raw, record, unparsed, [], replayed)
                continue
            extra = event.model_extra if not shape.kept_roots else shape.extra(event)
            if (extra and not replay and DEAD_LETTER_FIELD in extra) or (
                ids_dropped and _names_a_letter(raw, record)
            ):
                _refuse_export(position)
            ts = event_time(event)
            key = lineage_key(event)
            if ts > future_limit:
                field_name = shape.spec.event_time
                reason = (
                    f"{field_name}.in_future",
                    f"{field_name}: {ts.isoformat()} is later than now plus the tolerance",
                )
                batch.rejected.append(
                    Rejected(position, key[:cut], _text(raw), [reason], record, replayed)
                )
                continue
            if extra and has_non_finite(extra):
                # As for a declared field: the line is not JSON, whichever field holds them.
                reason = (
                    "malformed.json",
                    "line is not valid JSON: NaN and Infinity are not numbers",
                )
                batch.rejected.append(
                    Rejected(position, key[:cut], _text(raw), [reason], record, replayed)
                )
                continue
            try:
                attributes = dumps(extra, option=sort_keys).decode() if extra else None
            except orjson.JSONEncodeError as error:
                reason = (
                    "attributes.unstorable",
                    f"extra fields cannot be stored as JSON: {error}",
                )
                batch.rejected.append(
                    Rejected(position, key[:cut], _text(raw), [reason], record, replayed)
                )
                continue
            us = (ts - EPOCH) // MICROSECOND  # to_micros(ts), without a call per record
            row = (
                (self._seq + 1, position, *values(event), attributes, key, us)
                if key_column
                else (self._seq + 1, position, *values(event), attributes, us)
            )
            if self.screen is not None and (unstorable := self.screen(row)):
                batch.rejected.append(
                    Rejected(position, key[:cut], _text(raw), unstorable, record, replayed)
                )
                continue
            if replayed is not None:
                batch.resolved.append(replayed)
            self._seq += 1
            staged.append(row)
            if batch.newest is None or ts > batch.newest:
                batch.newest = ts
        return batch

    def _claim(self, letter: int | None) -> int | None:
        """The dead letter a replayed record stands for, unless an earlier record of this run
        spoke for it already: then it is a record of its own, so that one letter is never both
        refreshed (still bad) and resolved (fixed) by one run."""
        if letter is None or letter in self._claimed:
            return None
        self._claimed.add(letter)
        return letter

    def _unparsed_cells(
        self, record: dict[str, Any], csv_fields: tuple[str, ...]
    ) -> dict[str, str]:
        """Parse the cells of json fields: all of them in a CSV row; in a replayed record, those
        its `_cells` names that are json fields today."""
        listed = record.pop(CELLS_FIELD, None) if self.replay else None
        if isinstance(listed, list):
            csv_fields = csv_fields or tuple(n for n in self.shape.json_fields if n in listed)
        return _parse_cells(record, csv_fields) if csv_fields else {}

    def _refuse(
        self,
        batch: Batch,
        position: int,
        raw: bytes | str,
        record: dict[str, Any],
        unparsed: dict[str, str],
        reasons: list[Reason],
        replayed: int | None,
    ) -> None:
        """Reject an invalid record, its unparsed cells named in the record kept for a replay, and
        its event time where it has one (`mark_behind` compares it with the watermark)."""
        ts = _loose_ts(self.shape.loose_event_time(record))
        key = self.shape.loose_key(record)
        cell_reasons = [
            (f"{name}.json_invalid", f"{name}: the cell is not JSON text: {error}")
            for name, error in unparsed.items()
        ]
        kept = record | {CELLS_FIELD: list(unparsed)} if unparsed else record
        batch.rejected.append(
            Rejected(position, key, _text(raw), cell_reasons + reasons, kept, replayed, ts=ts)
        )


def mark_behind(batch: Batch, watermark: datetime | None, skip_through: datetime | None) -> None:
    """Mark what the watermark decides in `batch`: the staged records at or below `watermark`
    (`Batch.behind`: they may turn out late) and the invalid records at or below `skip_through`
    (`Rejected.behind`: skipped, not rejected again, when their dead letter exists)."""
    if watermark is not None:
        line = (watermark - EPOCH) // MICROSECOND
        # A staged row ends with its event time in microseconds (`fates.TS_US`).
        batch.behind = sum(1 for row in batch.staged if row[-1] <= line)
    if skip_through is not None:
        batch.rejected = [
            dataclasses.replace(r, behind=r.ts.isoformat())
            if r.ts is not None and r.ts <= skip_through
            else r
            for r in batch.rejected
        ]


def _names_a_letter(raw: bytes | str, record: dict[str, Any] | None) -> bool:
    if record is None:
        marker = f'"{DEAD_LETTER_FIELD}"'
        found = marker.encode() in raw if isinstance(raw, bytes) else marker in raw
        if not found:
            return False
        parsed = parse_object(raw)
        record = parsed if isinstance(parsed, dict) else {}
    return DEAD_LETTER_FIELD in record


def _refuse_export(position: int) -> None:
    # Loaded as plain records, an export's letters would stay open for good, the fixed records
    # would carry their ids into the target's attributes, and unfixed ones would be new letters.
    raise InputError(
        f"the record at position {position} carries a {DEAD_LETTER_FIELD} id, so this is a "
        "dead-letter export; load it with `capstone run --replay`"
    )


def _parse_cells(record: dict[str, Any], names: tuple[str, ...]) -> dict[str, str]:
    """Parse the JSON text in these fields' cells, in place; a blank cell is null. Returns the
    fields whose text is not JSON, with the parser's complaint; they keep their text."""
    unparsed: dict[str, str] = {}
    for name in names:
        cell = record.get(name)
        if type(cell) is not str:
            continue  # absent, or already a JSON value (an edited export)
        if not cell.strip():
            record[name] = None
            continue
        try:
            record[name] = loads_exact(cell)
        except orjson.JSONDecodeError as error:
            unparsed[name] = str(error)
    return unparsed


_OTHER_DELIMITERS = (",", ";", "\t", "|")


def header_check(spec: PipelineSpec) -> HeaderCheck:
    """A check of a CSV header for `spec`: a header without a column for a required field makes
    every row a reject, most likely another delimiter or a misspelt name. It refuses the file
    instead, naming the delimiter that would split the header into the pipeline's columns."""
    required = [name for name, field in spec.fields.items() if field.required]

    def check(name: str, header: list[str], text: str, delimiter: str) -> None:
        missing = [name for name in required if name not in header]
        if not missing:
            return
        widest = (delimiter, len(header))
        for other in _OTHER_DELIMITERS:
            if other == delimiter:
                continue
            cells = [cell.strip() for cell in next(csv.reader([text], delimiter=other), [])]
            if all(name in cells for name in required):
                # The built-in pipeline takes no settings from capstone.toml: the option only.
                setting = (
                    ""
                    if spec.is_builtin
                    else f" or set delimiter = {_toml(other)} for pipeline {spec.name!r}"
                )
                raise InputError(
                    f"{name}: the CSV header splits into {_columns(len(header))} with {delimiter!r} but "
                    f"into {_columns(len(cells))} with {other!r}; use --delimiter {_shell(other)}"
                    f"{setting}"
                )
            if len(header) == 1 and len(cells) > widest[1]:
                widest = (other, len(cells))
        shown = ", ".join(header[:8]) + (", ..." if len(header) > 8 else "")
        split = (
            ""
            if widest[0] == delimiter
            else f"; {widest[0]!r} splits it into {_columns(widest[1])}"
        )
        raise InputError(
            f"{name}: the CSV header ({shown}) has no column for {', '.join(missing)}, which pipeline "
            f"{spec.name!r} requires, so every row would be rejected; check the header's names "
            f"(case counts) and the delimiter ({delimiter!r}{split})"
        )

    return check


def _columns(count: int) -> str:
    return f"{count} column" + ("" if count == 1 else "s")


def _shell(delimiter: str) -> str:
    return "tab" if delimiter == "\t" else f"'{delimiter}'"


def _toml(delimiter: str) -> str:
    return '"\\t"' if delimiter == "\t" else f'"{delimiter}"'
