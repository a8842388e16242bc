"""Validation and fates: what is staged, rejected or skipped, and why."""

from datetime import datetime, timedelta
from typing import Any

import pytest

from capstone.classify import Classifier, mark_behind
from capstone.sources import Malformed
from capstone.spec import MAX_TEXT_LENGTH

NOW = datetime(2025, 6, 1)
GOOD = {"key": "a", "name": "n", "value": 1, "ts": "2025-01-01T00:00:00"}


def classify(*records: Any, skip_through: datetime | None = None) -> Any:
    batch = Classifier(NOW + timedelta(days=1)).classify(
        [(i, "raw", r) for i, r in enumerate(records)]
    )
    mark_behind(batch, skip_through, skip_through)
    return batch


def codes(record: dict[str, Any]) -> list[str]:
    [rejected] = classify(record).rejected
    return [code for code, _ in rejected.reasons]


def test_valid_record_is_staged_with_canonical_ts() -> None:
    """A valid event is staged with ts as naive UTC text, and as microseconds since 1970 last
    (what lineage stores)."""
    [row] = classify(GOOD | {"ts": "2025-01-01T01:00:00+01:00"}).staged
    assert row == (1, 0, "a", "n", 1.0, "2025-01-01T00:00:00", None, 1_735_689_600_000_000)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"key": "  "}, "key.string_too_short"),
        ({"key": 5}, "key.string_type"),
        ({"key": "k" * (MAX_TEXT_LENGTH + 1)}, "key.string_too_long"),
        ({"name": {"nested": 1}}, "name.string_type"),
        ({"value": "not_a_number"}, "value.float_parsing"),
        ({"value": True}, "value.invalid"),
        ({"value": "1_000"}, "value.invalid"),
        ({"value": float("nan")}, "value.invalid"),
        ({"value": "Infinity"}, "value.finite_number"),
        ({"value": [1]}, "value.float_type"),
        ({"ts": "2025-02-30T00:00:00"}, "ts.datetime_from_date_parsing"),
        ({"ts": 1736928000}, "ts.invalid"),
        ({"ts": "2030-01-01T00:00:00"}, "ts.in_future"),
    ],
)
def test_invalid_fields_are_rejected_with_a_code(change: dict[str, Any], code: str) -> None:
    """Each kind of bad field gives its own machine-readable reason code."""
    assert codes(GOOD | change) == [code]


def test_missing_fields_each_get_a_reason() -> None:
    """Every missing field is named, not only the first."""
    assert codes({"key": "a"}) == ["name.missing", "value.missing", "ts.missing"]


def test_numeric_strings_are_accepted_as_values() -> None:
    """CSV-style numeric text is a valid value."""
    [row] = classify(GOOD | {"value": " 2.5 "}).staged
    assert row[4] == 2.5


def test_extra_fields_are_kept_as_sorted_json() -> None:
    """Unknown fields travel as a JSON object."""
    [row] = classify(GOOD | {"z": 1, "a": "x"}).staged
    assert row[6] == '{"a":"x","z":1}'


def test_records_at_or_below_the_watermark_are_marked_not_skipped() -> None:
    """The classifier skips nothing: a record behind the watermark is staged (and counted as
    behind) or rejected with its event time, for the store to check what an earlier run had."""
    batch = classify(
        GOOD,
        GOOD | {"value": "bad"},
        GOOD | {"ts": "2025-01-02T00:00:00"},
        skip_through=datetime(2025, 1, 1),
    )
    assert len(batch.staged) == 2
    assert batch.behind == 1
    [rejected] = batch.rejected
    assert rejected.behind == GOOD["ts"]


def test_malformed_records_are_rejected_with_their_raw_text() -> None:
    """A record that is not an object is rejected with the reader's reason and raw text."""
    [rejected] = classify(Malformed("malformed.json", "bad")).rejected
    assert rejected.raw == "raw"
    assert rejected.codes == "malformed.json"


def test_sql_injection_text_is_just_text() -> None:
    """Quotes and SQL in fields are ordinary characters."""
    evil = "x'); DROP TABLE target; --"
    [row] = classify(GOOD | {"key": evil, "name": evil}).staged
    assert row[2] == evil
