"""Event times as feeds write them: epoch seconds to nanoseconds, strptime layouts, and a time
zone for values without an offset. All are stored as naive UTC, so the guard, the watermark and
the reports work unchanged."""

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from capstone import RunOptions, run
from capstone.spec import PipelineSpec
from tests.conftest import fetch


def clicks(**ts: Any) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {
            "name": "clicks",
            "key": "id",
            "event_time": "ts",
            "fields": {"id": {"type": "integer"}, "ts": {"type": "timestamp", **ts}}
            | ({"n": {"type": "integer", "required": False}}),
        }
    )


def times(db: str, query: str) -> list[tuple[Any, ...]]:
    """Rows with timestamps as ISO text, as SQLite stores them (PostgreSQL returns datetimes)."""
    return [
        tuple(v.isoformat() if isinstance(v, datetime) else v for v in row)
        for row in fetch(db, query)
    ]


def lines(path: Path, *records: str) -> str:
    path.write_text("".join(record + "\n" for record in records))
    return str(path)


def test_epoch_milliseconds_load_as_utc_and_the_guard_refuses_older_ones(
    db: str, tmp_path: Path
) -> None:
    """1736899200000 ms is 2025-01-15T00:00:00 UTC; an older event of the same key is stale."""
    path = lines(
        tmp_path / "clicks.jsonl",
        '{"id": 1, "ts": 1736899200000, "n": 1}',
        '{"id": 2, "ts": "1736899200123", "n": 1}',
        '{"id": 1, "ts": 1736899199999, "n": 2}',
    )
    summary = run(path, db, spec=clicks(format="epoch_ms"))
    assert (summary.loaded, summary.stale, summary.rejected) == (2, 1, 0)
    assert times(db, "SELECT id, ts, n FROM clicks ORDER BY id") == [
        (1, "2025-01-15T00:00:00", 1),
        (2, "2025-01-15T00:00:00.123000", 1),
    ]
    assert summary.watermark == "2025-01-15T00:00:00.123000"


@pytest.mark.parametrize(
    ("fmt", "value"),
    [
        ("epoch_s", 1736899200),
        ("epoch_s", "1736899200.5"),
        ("epoch_ms", 1736899200500),
        ("epoch_us", 1736899200500000),
        ("epoch_ns", 1736899200500000999),
    ],
)
def test_every_epoch_unit_reads_the_same_moment(
    db_path: str, tmp_path: Path, fmt: str, value: object
) -> None:
    """Seconds (with a fraction), milliseconds, microseconds and nanoseconds (truncated to the
    microsecond the databases keep) name the same instant."""
    raw = f'"{value}"' if isinstance(value, str) else str(value)
    path = lines(tmp_path / "one.jsonl", f'{{"id": 1, "ts": {raw}}}')
    assert run(path, db_path, spec=clicks(format=fmt)).loaded == 1
    expected = (
        "2025-01-15T00:00:00"
        if fmt == "epoch_s" and isinstance(value, int)
        else ("2025-01-15T00:00:00.500000")
    )
    assert times(db_path, "SELECT ts FROM clicks") == [(expected,)]


def test_values_that_do_not_fit_the_format_are_rejected_with_the_fields_reason(
    db: str, tmp_path: Path
) -> None:
    """ISO text, booleans and words under an epoch format are dead letters with `ts.format`."""
    path = lines(
        tmp_path / "bad.jsonl",
        '{"id": 1, "ts": "2025-01-15T00:00:00"}',
        '{"id": 2, "ts": true}',
        '{"id": 3, "ts": "soon"}',
        '{"id": 4, "ts": 99999999999999999}',
    )
    summary = run(path, db, spec=clicks(format="epoch_ms"))
    assert (summary.loaded, summary.rejected) == (0, 4)
    assert fetch(db, "SELECT reason, message FROM dead_letters ORDER BY position") == [
        ("ts.format", "ts: '2025-01-15T00:00:00' does not fit the format epoch_ms"),
        ("ts.format", "ts: True does not fit the format epoch_ms"),
        ("ts.format", "ts: 'soon' does not fit the format epoch_ms"),
        ("ts.format", "ts: 99999999999999999 epoch_ms lies outside the years 1-9999"),
    ]


def test_rejects_with_an_epoch_time_behind_the_watermark_are_skipped_on_a_rerun(
    db: str, tmp_path: Path
) -> None:
    """A rejected record's epoch time is read for the skip check like an ISO one: a forced rerun
    skips its existing dead letter instead of counting it again."""
    path = lines(
        tmp_path / "mixed.jsonl",
        '{"id": 1, "ts": 1736899200000}',
        '{"id": 2, "ts": 1736899100000, "n": "x"}',
    )
    first = run(path, db, spec=clicks(format="epoch_ms"))
    assert (first.loaded, first.rejected) == (1, 1)
    again = run(path, db, RunOptions(force=True), spec=clicks(format="epoch_ms"))
    assert (again.skipped, again.rejected) == (2, 0)


def test_a_strptime_layout_with_a_time_zone_reads_wall_time(db: str, tmp_path: Path) -> None:
    """13:00 in Paris is 12:00 UTC in winter and 11:00 UTC in summer; a value of another layout
    is rejected."""
    spec = PipelineSpec.model_validate(
        {
            "name": "paris",
            "key": "id",
            "event_time": "when",
            "fields": {
                "id": {"type": "string"},
                "when": {
                    "type": "timestamp",
                    "format": "%d/%m/%Y %H:%M:%S",
                    "timezone": "Europe/Paris",
                },
            },
        }
    )
    path = tmp_path / "paris.csv"
    path.write_text("id,when\na,15/01/2025 13:00:00\nb,31/07/2025 13:00:00\nc,2025-01-01\n")
    summary = run(str(path), db, spec=spec)
    assert (summary.loaded, summary.rejected) == (2, 1)
    assert times(db, 'SELECT id, "when" FROM paris ORDER BY id') == [
        ("a", "2025-01-15T12:00:00"),
        ("b", "2025-07-31T11:00:00"),
    ]
    assert fetch(db, "SELECT reason FROM dead_letters") == [("when.format",)]


def test_a_time_zone_applies_to_iso_text_without_an_offset_only(
    db_path: str, tmp_path: Path
) -> None:
    """With timezone and no format, naive ISO text is wall time there; an offset still wins."""
    path = lines(
        tmp_path / "tokyo.jsonl",
        '{"id": 1, "ts": "2025-01-15T09:00:00"}',
        '{"id": 2, "ts": "2025-01-15T09:00:00+00:00"}',
    )
    assert run(path, db_path, spec=clicks(timezone="Asia/Tokyo")).loaded == 2
    assert fetch(db_path, "SELECT id, ts FROM clicks ORDER BY id") == [
        (1, "2025-01-15T00:00:00"),
        (2, "2025-01-15T09:00:00"),
    ]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"format": "epoch_minutes"}, "is neither epoch_s, epoch_ms, epoch_us, epoch_ns nor"),
        ({"timezone": "Mars/Olympus"}, "is not a known time zone"),
        ({"format": "epoch_ms", "timezone": "UTC"}, "in UTC by definition; drop timezone"),
    ],
)
def test_settings_no_value_could_meet_are_refused(settings: dict[str, str], message: str) -> None:
    """A format, zone or combination that cannot work is a config error, not a run of rejects."""
    with pytest.raises(ValidationError, match=message):
        clicks(**settings)


def test_format_belongs_to_timestamp_fields() -> None:
    """format on an integer field is refused; an integer event time points to epoch formats."""
    with pytest.raises(ValidationError, match="apply to timestamp fields, not integer"):
        PipelineSpec.model_validate(
            {
                "name": "p",
                "key": "id",
                "event_time": "ts",
                "fields": {
                    "id": {"type": "integer", "format": "epoch_s"},
                    "ts": {"type": "timestamp"},
                },
            }
        )
    with pytest.raises(ValidationError, match='format = "epoch_ms"'):
        PipelineSpec.model_validate(
            {
                "name": "p",
                "key": "id",
                "event_time": "ts",
                "fields": {"id": {"type": "string"}, "ts": {"type": "integer"}},
            }
        )
