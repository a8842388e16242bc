"""Dead letters back out: as items for a replay run, or as lines of an export for fixing by hand."""

from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from capstone.classify import DEAD_LETTER_FIELD
from capstone.jsontext import dumps_exact, loads_exact
from capstone.sources import WRONG_COLUMNS, Item, Malformed
from capstone.summary import DeadLetter

__all__ = ["export_line", "replay_items"]


def _record(letter: DeadLetter) -> dict[str, Any] | Malformed:
    """The object a dead letter holds: the parsed record, else its raw text parsed again. Raw
    text that is no JSON object (a broken line, a CSV row cut short) cannot have changed, so it
    keeps its reasons."""
    if letter.record is not None:
        return dict(letter.record)
    try:
        parsed = loads_exact(letter.raw)
    except orjson.JSONDecodeError:
        parsed = None
    if type(parsed) is not dict:
        return Malformed(letter.reason, letter.message)
    return parsed


def replay_items(letters: Iterable[DeadLetter]) -> Iterator[Item]:
    """Items for a replay run; each object carries its dead letter's id for resolution."""
    for letter in letters:
        record = _record(letter)
        if type(record) is dict:
            record[DEAD_LETTER_FIELD] = letter.id
        yield letter.position, letter.raw, record


def export_line(letter: DeadLetter) -> bytes | None:
    """One line of an export: the record with its `_dead_letter` id, or the raw text as it was.

    None for a CSV row that never parsed: as a line of JSON Lines it would mean something else,
    and replaying it would replace its reason with `malformed.json`. It is fixed in the CSV.
    """
    if letter.record is None and letter.reason == WRONG_COLUMNS:
        return None
    record = _record(letter)
    if type(record) is dict:
        line = dumps_exact(record | {DEAD_LETTER_FIELD: letter.id})
        return line.encode("utf-8", "surrogatepass")
    return letter.raw.replace("\r", " ").replace("\n", " ").encode("utf-8", "backslashreplace")
