"""Dead letters back out: as items for a replay run, or as lines of an export for fixing by hand.

How a replayed record finds its letter, so that a letter is resolved exactly when its record
loaded and no bad record is ever left without an open letter:

- By id. An export line carries `_dead_letter`; a stored letter replayed by `capstone replay`
  carries its own id. The first record of a run to name an id claims it (`Classifier._claim`); a
  later one naming the same id is a record of its own. Staged, the claimer resolves its letter;
  rejected, it refreshes it (`_refresh_letter`: count, reasons, the record it now parses to) and
  opens it again if an earlier replay had resolved it.
- By fingerprint, for records without an id: the same raw text as an existing letter counts a
  sighting of that letter and opens it again if a replay had resolved it (`sightings`).
- A letter a bad record sighted earlier in the same run is not resolved later in it, and resolves
  run before rejects within a batch: a bad copy always keeps the letter open, whatever the order
  and the batch size.
"""

from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from capstone.fates import DEAD_LETTER_FIELD, RAW_FIELD
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
    replace the line with the fixed record, keeping `_dead_letter`).

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
