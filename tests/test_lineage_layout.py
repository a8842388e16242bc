"""The compact lineage layout: steps as codes, event times as microseconds, read back as text."""

import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capstone import run
from capstone.store import open_store
from capstone.store.postgres.store import DIALECT as POSTGRES
from capstone.store.sql import Dialect
from capstone.store.sqlite import DIALECT as SQLITE
from capstone.timeutil import format_ts, to_micros
from tests.conftest import fetch

times = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59))


def dialect_of(db: str) -> Dialect:
    return POSTGRES if db.startswith("postgresql://") else SQLITE


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=times)
def test_event_times_read_back_as_the_text_capstone_writes(db: str, value: datetime) -> None:
    """Microseconds since 1970 read back as format_ts's text on each backend, before 1970, at
    year 1 and 9999, with and without a fraction; and the text converts back (migrations)."""
    open_store(db).close()  # PostgreSQL's capstone_ts_text comes with the tables
    d = dialect_of(db)
    micros, text = to_micros(value), format_ts(value)
    [(shown, back)] = fetch(
        db, f"SELECT {d.micros_text.format(str(micros))}, {d.text_micros.format(repr(text))}"
    )
    assert shown == text
    assert back == micros


def test_lineage_reads_every_step_with_its_text(db: str, sample: str) -> None:
    """The view shows the seed's 12 steps as text, details included, from 7 stored rows."""
    run(sample, db)
    assert fetch(db, "SELECT COUNT(*) FROM lineage_records") == [(7,)]
    steps = fetch(db, "SELECT step, key, detail FROM lineage WHERE key = 'evt-003' ORDER BY id")
    assert steps == [
        ("stage", "evt-003", None),
        ("load", "evt-003", "ts 2025-01-15T09:30:00"),
        ("stage", "evt-003", None),
        ("load", "evt-003", "ts 2025-01-15T12:00:00"),
    ]
    rejects = fetch(db, "SELECT detail FROM lineage WHERE step = 'reject' ORDER BY id")
    assert rejects == [("key.string_too_short",), ("value.float_parsing",)]


def test_sqlite_lineage_takes_at_most_70_bytes_a_record(tmp_path: Path) -> None:
    """20,000 records of the benchmark's shape take at most 70 bytes each of lineage, rows and
    index together (dbstat), as issue 18 asks of the 1M-record benchmark."""
    lines = []
    base = datetime(2024, 1, 1)
    for i in range(20_000):
        ts = format_ts(base + timedelta(seconds=i, microseconds=(i * 7919) % 1000 * 1000))
        key = f"evt-{(i * 2654435761) % 2**32:08x}"
        lines.append(f'{{"key": "{key}", "name": "click", "value": {i % 997}.5, "ts": "{ts}"}}')
    feed = tmp_path / "feed.jsonl"
    feed.write_text("\n".join(lines) + "\n")
    db = str(tmp_path / "capstone.db")
    run(str(feed), db)
    conn = sqlite3.connect(db)
    [(size,)] = conn.execute(
        "SELECT SUM(pgsize) FROM dbstat WHERE name IN ('lineage_records', 'lineage_run_key')"
    ).fetchall()
    conn.close()
    assert size / 20_000 <= 70
