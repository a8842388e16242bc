"""The tie rule: a record with the stored event time keeps the stored row, or replaces it."""

from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capstone import RunOptions, run
from capstone.spec import PipelineSpec
from tests.conftest import fetch

KEYS = st.sampled_from(["a", "b", "c"])
TIMES = st.integers(0, 4).map(lambda h: f"2025-01-01T0{h}:00:00")
RECORD = st.tuples(KEYS, TIMES, st.integers(0, 3))
BATCHES = st.lists(st.lists(RECORD, max_size=8), min_size=1, max_size=4)

AGAIN = RunOptions(force=True)
"""Loads a file again even when its content was (the tests are about records, not files)."""

Record = tuple[str, str, int]


def readings(ties: str) -> PipelineSpec:
    """A pipeline of readings by key whose tie rule is `ties`."""
    return PipelineSpec.model_validate(
        {
            "name": "readings",
            "key": "key",
            "event_time": "ts",
            "ties": ties,
            "fields": {
                "key": {"type": "string"},
                "ts": {"type": "timestamp"},
                "value": {"type": "float"},
            },
        }
    )


def write(path: Path, records: list[Record]) -> str:
    path.write_bytes(
        b"".join(orjson.dumps({"key": k, "ts": t, "value": v}) + b"\n" for k, t, v in records)
    )
    return str(path)


def reference(
    batches: list[list[Record]], ties: str
) -> tuple[dict[str, tuple[str, int]], list[tuple[int, int, int]]]:
    """Runs applied record by record: behind the watermark, a record the target held at the run's
    start is skipped (for `replace`, only the same time with the same value, and no earlier
    record of the run with its key and time, which may have replaced the row first); any other
    wins when newer (or as new, for `replace`) than the key's current row, and is stale
    otherwise. Returns the target and (loaded, stale, skipped) per run."""
    target: dict[str, tuple[str, int]] = {}
    watermark: str | None = None
    counts = []
    for batch in batches:
        before = dict(target)
        seen: set[tuple[str, str]] = set()
        loaded = stale = skipped = 0
        for key, ts, value in batch:
            held = before.get(key)
            tie_before = (key, ts) in seen
            seen.add((key, ts))
            same = ties == "keep" or (held is not None and held[1] == value and not tie_before)
            if (
                watermark is not None
                and ts <= watermark
                and held is not None
                and (held[0] > ts or (held[0] == ts and same))
            ):
                skipped += 1
                continue
            current = target.get(key)
            if current is None or ts > current[0] or (ties == "replace" and ts == current[0]):
                target[key] = (ts, value)
                loaded += 1
            else:
                stale += 1
            watermark = ts if watermark is None else max(watermark, ts)
        counts.append((loaded, stale, skipped))
    return target, counts


def stored(db: str) -> dict[str, tuple[str, int]]:
    rows = fetch(db, "SELECT key, ts, value FROM readings")
    return {key: (str(ts).replace(" ", "T"), int(value)) for key, ts, value in rows}


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=BATCHES, ties=st.sampled_from(["keep", "replace"]))
def test_either_rule_matches_the_record_by_record_reference(
    db_factory: Any, tmp_path_factory: Any, batches: list[list[Record]], ties: str
) -> None:
    """Over random runs full of ties and repeats, the target and every run's loaded, stale and
    skipped counts equal the reference, under either tie rule."""
    folder = tmp_path_factory.mktemp("ties")
    db, spec = db_factory(), readings(ties)
    expected, counts = reference(batches, ties)
    for number, batch in enumerate(batches):
        # force: a file whose content was loaded before is a record-level rerun, not a skip
        summary = run(write(folder / f"{number}.jsonl", batch), db, AGAIN, spec=spec)
        assert (summary.loaded, summary.stale, summary.skipped) == counts[number]
        assert summary.is_balanced()
    assert stored(db) == expected


def test_a_correction_at_the_same_time_replaces_the_stored_row(db: str, tmp_path: Path) -> None:
    """With ties = "replace", a re-delivery with the stored event time and a new value loads."""
    spec = readings("replace")
    run(write(tmp_path / "first.jsonl", [("a", "2025-01-01T01:00:00", 10)]), db, spec=spec)
    fixed = run(write(tmp_path / "fix.jsonl", [("a", "2025-01-01T01:00:00", 12)]), db, spec=spec)
    assert (fixed.loaded, fixed.late, fixed.skipped) == (1, 1, 0)
    assert stored(db) == {"a": ("2025-01-01T01:00:00", 12)}


def test_a_rerun_under_replace_is_skipped(db: str, tmp_path: Path) -> None:
    """Replacing ties still keeps reruns idempotent: the same record again is skipped."""
    spec = readings("replace")
    path = write(tmp_path / "first.jsonl", [("a", "2025-01-01T01:00:00", 10)])
    run(path, db, spec=spec)
    again = run(path, db, AGAIN, spec=spec)
    assert (again.staged, again.loaded, again.skipped) == (0, 0, 1)


def test_the_default_rule_keeps_the_stored_row(db: str, tmp_path: Path) -> None:
    """With the default ties = "keep", the same event time never replaces: skipped as held."""
    spec = readings("keep")
    run(write(tmp_path / "first.jsonl", [("a", "2025-01-01T01:00:00", 10)]), db, spec=spec)
    fixed = run(write(tmp_path / "fix.jsonl", [("a", "2025-01-01T01:00:00", 12)]), db, spec=spec)
    assert (fixed.loaded, fixed.skipped) == (0, 1)
    assert stored(db) == {"a": ("2025-01-01T01:00:00", 10)}


def test_changing_the_rule_is_recorded(db: str, tmp_path: Path) -> None:
    """Switching a pipeline from keep to replace is a recorded definition change, not refused."""
    path = write(tmp_path / "first.jsonl", [("a", "2025-01-01T01:00:00", 10)])
    run(path, db, spec=readings("keep"))
    run(path, db, spec=readings("replace"))
    changes = [change for (change,) in fetch(db, "SELECT change FROM schema_changes")]
    assert "ties keep -> replace" in changes


def test_a_rerun_of_two_corrections_at_one_time_keeps_the_last(db: str, tmp_path: Path) -> None:
    """Two records of a key at the same time, loaded again: the first no longer matches the stored
    row and the second does, yet the second is not skipped as held, because the first replaces
    the row before it comes; the last one stays, as one by one (it used to flip back)."""
    spec = readings("replace")
    path = write(
        tmp_path / "d.jsonl", [("a", "2025-01-01T01:00:00", 10), ("a", "2025-01-01T01:00:00", 12)]
    )
    run(path, db, spec=spec)
    assert stored(db) == {"a": ("2025-01-01T01:00:00", 12)}
    again = run(path, db, AGAIN, spec=spec)
    assert stored(db) == {"a": ("2025-01-01T01:00:00", 12)}
    assert (again.staged, again.loaded, again.skipped) == (2, 2, 0)
    assert again.is_balanced()
