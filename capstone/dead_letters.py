"""Dead letters back out: as items for a replay run, or as lines of an export for fixing by hand."""

from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from capstone.classify import DEAD_LETTER_FIELD, RAW_FIELD
from capstone.jsontext import dumps_exact, loads_exact
from capstone.sources import JSON_FAILURES, Item, Malformed
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
        return Malformed(letter.reason, letter.message, letter.id)
    return parsed


def replay_items(letters: Iterable[DeadLetter]) -> Iterator[Item]:
    """Items for a replay run; each object carries its dead letter's id for resolution."""
    for letter in letters:
        record = _record(letter)
        if type(record) is dict:
            record[DEAD_LETTER_FIELD] = letter.id
        yield letter.position, letter.raw, record


def export_line(letter: DeadLetter) -> bytes | None:
    """One line of an export, tagged with the letter's `_dead_letter` id: the record, or for a
    line that never parsed, `{"_dead_letter": ID, "_raw": "the text"}` (fix the text inside, or
    write the record's fields beside it: they win, and `_raw` is dropped).

    None for a letter with neither (a CSV row): as a line of JSON Lines it would mean something
    else, and replaying it would replace its reason with `malformed.json`. It is fixed where it
    came from.
    """
    record = _record(letter)
    if type(record) is dict:
        fields = record | {DEAD_LETTER_FIELD: letter.id}
    elif letter.reason in JSON_FAILURES:
        fields = {DEAD_LETTER_FIELD: letter.id, RAW_FIELD: letter.raw}
    else:
        return None
    return dumps_exact(fields).encode("utf-8", "surrogatepass")
