"""Skipped means covered: a record behind the watermark is skipped only when the target (or a dead
letter) already holds it; any other late record is merged, and `late` counts those that load."""

import json
import random
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from capstone import RunOptions, RunSummary, run
from capstone.cli import app
from tests.conftest import event, fetch, stored_letters

T0 = datetime(2025, 1, 1)
Record = dict[str, Any]


def at(hours: float) -> str:
    """The event time `hours` after 2025-01-01T00:00:00, as canonical text."""
    return (T0 + timedelta(hours=hours)).isoformat()


def target(db: str) -> dict[str, tuple[str, float]]:
    """The target table as {key: (ts, value)}, ts as ISO text on either backend."""
    rows = fetch(db, "SELECT key, ts, value FROM target")
    return {key: (str(ts).replace(" ", "T"), float(value)) for key, ts, value in rows}


def lineage(db: str, run_id: int) -> list[tuple[str, str, str | None]]:
    """One run's lineage rows as (step, key, detail), in key, step order."""
    rows = fetch(db, f"SELECT step, key, detail FROM lineage WHERE run_id = {run_id}")
    return sorted((step, key, detail) for step, key, detail in rows)


def counts(summary: RunSummary) -> dict[str, int]:
    """The counts of a summary that the reference model predicts."""
    return {
        "input_records": summary.input_records,
        "staged": summary.staged,
        "loaded": summary.loaded,
        "late": summary.late,
        "stale": summary.stale,
        "skipped": summary.skipped,
        "rejected": summary.rejected,
    }


class Reference:
    """Runs of valid records one by one, as the issue states them (default settings, lookback 0).

    Behind the watermark a record is skipped when the target held its key at the same or a later
    event time before the run; every other record is staged and loads when it is newer than
    everything before it for its key; a loaded record at or below the watermark is late."""

    def __init__(self) -> None:
        self.target: dict[str, tuple[str, float]] = {}
        self.watermark: str | None = None

    def run(self, records: list[Record]) -> dict[str, int]:
        before, watermark = dict(self.target), self.watermark
        result = dict.fromkeys(["staged", "loaded", "late", "stale", "skipped"], 0)
        for record in records:
            key, ts = record["key"], record["ts"]
            behind = watermark is not None and ts <= watermark
            if behind and key in before and before[key][0] >= ts:
                result["skipped"] += 1
                continue
            result["staged"] += 1
            if key not in self.target or ts > self.target[key][0]:
                self.target[key] = (ts, float(record["value"]))
                result["loaded"] += 1
                result["late"] += behind
            else:
                result["stale"] += 1
            if self.watermark is None or ts > self.watermark:
                self.watermark = ts
        return result | {"input_records": len(records), "rejected": 0}


def newest(records: list[Record]) -> dict[str, tuple[str, float]]:
    """The newest version of every key: what the target must end with, whatever the order."""
    best: dict[str, tuple[str, float]] = {}
    for record in records:
        key, ts = record["key"], record["ts"]
        if key not in best or ts > best[key][0]:
            best[key] = (ts, float(record["value"]))
    return best


# -- the new user's seven days, at small scale ----------------------------------------------------


@cache
def seven_days() -> tuple[tuple[Record, ...], ...]:
    """Seven daily files of 200-400 events, ~30% repeated keys, distinct ts per key; about 3% of
    each day's records arrive in the next day's file, with a few new keys and newer versions
    stamped minutes before the previous day's newest event."""
    rng = random.Random(14)
    used: set[tuple[str, str]] = set()
    keys: list[str] = []
    serial = iter(range(1, 1_000_000))

    def stamp(key: str, moment: datetime) -> Record:
        while (key, moment.isoformat()) in used:
            moment += timedelta(seconds=1)
        used.add((key, moment.isoformat()))
        return event(key, moment.isoformat(), value=float(next(serial)))

    def new_key() -> str:
        keys.append(f"k{len(keys):05d}")
        return keys[-1]

    days: list[list[Record]] = []
    for day in range(7):
        start = T0 + timedelta(days=day)
        records = []
        for _ in range(rng.randint(200, 400)):
            key = rng.choice(keys) if keys and rng.random() < 0.3 else new_key()
            records.append(stamp(key, start + timedelta(seconds=rng.randrange(86_400))))
        days.append(records)
    files: list[list[Record]] = [list(records) for records in days]
    for day in range(6):
        records = days[day]
        day_max = max(r["ts"] for r in records)
        movable = [r for r in records if r["ts"] != day_max]
        moved = rng.sample(movable, k=len(records) * 3 // 100)
        newest_at = datetime.fromisoformat(day_max)
        # Minutes before the day's newest event: new keys, and newer versions of known ones.
        moved += [
            stamp(new_key(), newest_at - timedelta(minutes=rng.randint(1, 10))) for _ in range(3)
        ]
        moved += [
            stamp(rng.choice(keys[:100]), newest_at - timedelta(minutes=rng.randint(1, 10)))
            for _ in range(2)
        ]
        files[day] = [r for r in files[day] if r not in moved]
        for record in moved:
            files[day + 1].insert(rng.randrange(len(files[day + 1]) + 1), record)
    return tuple(tuple(records) for records in files)


@pytest.fixture
def day_files(write_jsonl: Any) -> list[str]:
    """The seven days written as events-2025-01-0N.jsonl."""
    return [
        write_jsonl(list(records), f"events-2025-01-0{day}.jsonl")
        for day, records in enumerate(seven_days(), start=1)
    ]


ORDERS = {
    "file order": [1, 2, 3, 4, 5, 6, 7],
    "reverse order": [7, 6, 5, 4, 3, 2, 1],
    "day 3 last": [1, 2, 4, 5, 6, 7, 3],
}


@pytest.mark.parametrize("order", list(ORDERS.values()), ids=list(ORDERS))
def test_seven_days_end_with_every_key_at_its_newest_version(
    db: str, day_files: list[str], order: list[int]
) -> None:
    """Whatever order the seven days load in, every key ends at its newest version, none missing."""
    for day in order:
        run(day_files[day - 1], db, RunOptions())
    everything = [r for records in seven_days() for r in records]
    assert target(db) == newest(everything)


@pytest.mark.parametrize("order", list(ORDERS.values()), ids=list(ORDERS))
def test_seven_days_summaries_balance_and_match_the_reference(
    db: str, day_files: list[str], order: list[int]
) -> None:
    """Each day's run balances and its counts (loaded, late, stale, skipped) equal the reference."""
    model = Reference()
    for day in order:
        summary = run(day_files[day - 1], db, RunOptions())
        assert summary.is_balanced()
        assert counts(summary) == model.run(list(seven_days()[day - 1]))


def test_seven_days_in_file_order_count_late_records(db: str, day_files: list[str]) -> None:
    """In file order, every day after the first loads late records, and the run log says how many."""
    late = [run(path, db, RunOptions()).late for path in day_files]
    assert late[0] == 0
    assert all(n > 0 for n in late[1:]), late
    stored = [n for (n,) in fetch(db, "SELECT late FROM run_log ORDER BY run_id")]
    assert stored == late


# -- order does not matter (property) -------------------------------------------------------------


@st.composite
def feeds(draw: Any) -> tuple[list[list[Record]], list[int], int]:
    """Records (few keys, distinct ts per key) split into files, a load order (every file at least
    once, in random order, with random repeats anywhere) and a batch size."""
    pairs = draw(
        st.lists(
            st.tuples(st.sampled_from("abcd"), st.integers(0, 30)),
            min_size=1,
            max_size=30,
            unique=True,
        )
    )
    homes = draw(st.lists(st.integers(0, 3), min_size=len(pairs), max_size=len(pairs)))
    files = [
        [
            event(k, at(h), value=float(i))
            for i, ((k, h), home) in enumerate(zip(pairs, homes, strict=True))
            if home == f
        ]
        for f in range(4)
    ]
    files = [records for records in files if records]
    loads = list(draw(st.permutations(range(len(files)))))
    for again in draw(st.lists(st.integers(0, len(files) - 1), max_size=4)):
        loads.insert(draw(st.integers(0, len(loads))), again)
    return files, loads, draw(st.sampled_from([1, 3, 10_000]))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(feed=feeds())
def test_any_order_and_repeats_end_at_the_reference(
    db_factory: Any, tmp_path_factory: Any, feed: Any
) -> None:
    """Files loaded in any order with repeats end at newest-per-key; every summary balances and
    equals the reference model's counts; a file loaded before stages nothing when it comes again."""
    files, loads, batch_size = feed
    folder = tmp_path_factory.mktemp("late")
    paths = []
    for number, records in enumerate(files):
        path = folder / f"{number}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        paths.append(str(path))
    db = db_factory()
    model = Reference()
    seen: set[int] = set()
    for number in loads:
        summary = run(paths[number], db, RunOptions(batch_size=batch_size))
        assert summary.is_balanced()
        assert counts(summary) == model.run(files[number])
        if number in seen:
            assert (summary.staged, summary.skipped) == (0, len(files[number]))
        seen.add(number)
    assert target(db) == newest([r for records in files for r in records])


# -- single behaviours ----------------------------------------------------------------------------


def test_late_record_for_a_new_key_loads_and_its_lineage_names_the_watermark(
    db: str, write_jsonl: Any
) -> None:
    """A new key behind the watermark loads; its lineage detail says how late, against which mark."""
    run(write_jsonl([event("a", at(10)), event("b", at(12))]), db)
    summary = run(write_jsonl([event("c", at(11))]), db)
    assert (summary.loaded, summary.late, summary.skipped) == (1, 1, 0)
    assert lineage(db, summary.run_id) == [
        ("load", "c", f"late: {at(11)} behind watermark {at(12)}"),
        ("stage", "c", None),
    ]


def test_late_record_older_than_the_stored_version_is_skipped_not_stale(
    db: str, write_jsonl: Any
) -> None:
    """Behind the watermark, a record older than the stored row of its key is skipped as covered."""
    run(write_jsonl([event("a", at(12), value=2.0)]), db)
    summary = run(write_jsonl([event("a", at(11), value=1.0)]), db)
    assert (summary.staged, summary.stale, summary.skipped) == (0, 0, 1)
    assert lineage(db, summary.run_id) == [("skip", "a", f"ts {at(11)}")]
    assert target(db) == {"a": (at(12), 2.0)}


def test_record_at_the_watermark_equal_to_the_stored_row_is_skipped_on_rerun(
    db: str, write_jsonl: Any
) -> None:
    """Rerun, the record that set the watermark (and is the stored row) is skipped, not staged."""
    path = write_jsonl([event("a", at(12))])
    first = run(path, db)
    again = run(path, db, RunOptions(force=True))
    assert first.watermark == at(12)
    assert (again.staged, again.skipped, again.late) == (0, 1, 0)
    assert lineage(db, again.run_id) == [("skip", "a", f"ts {at(12)}")]


def test_invalid_record_behind_the_watermark_with_a_letter_is_skipped(
    db: str, write_jsonl: Any
) -> None:
    """A bad record behind the watermark whose dead letter exists is skipped; times_seen stays."""
    bad = json.dumps({"key": "b", "name": "n", "value": "x", "ts": at(11)})
    run(write_jsonl([event("a", at(12)), bad]), db)
    summary = run(write_jsonl([bad]), db)
    assert (summary.rejected, summary.skipped, summary.dead_letters) == (0, 1, 0)
    [letter] = stored_letters(db)
    assert (letter.times_seen, letter.last_run_id) == (1, 1)


@pytest.mark.parametrize("batch_size", [1, 10_000])
def test_bad_record_repeated_behind_the_watermark_is_rejected_whatever_the_batching(
    db: str, write_jsonl: Any, batch_size: int
) -> None:
    """A new bad record twice in one run behind the watermark is rejected twice (one letter seen
    twice), in one batch or across batches: its letter did not exist before the run."""
    run(write_jsonl([event("a", at(12))]), db)
    bad = json.dumps({"key": "b", "name": "n", "value": "x", "ts": at(11)})
    summary = run(write_jsonl([bad, bad]), db, RunOptions(batch_size=batch_size))
    assert (summary.rejected, summary.skipped, summary.dead_letters) == (2, 0, 1)
    assert [letter.times_seen for letter in stored_letters(db)] == [2]


def test_invalid_record_behind_the_watermark_without_a_letter_is_rejected(
    db: str, write_jsonl: Any
) -> None:
    """A bad record behind the watermark with no dead letter yet is rejected and gets one."""
    run(write_jsonl([event("a", at(12))]), db)
    summary = run(write_jsonl([{"key": "b", "name": "n", "value": "x", "ts": at(11)}]), db)
    assert (summary.rejected, summary.skipped, summary.dead_letters) == (1, 0, 1)
    [letter] = stored_letters(db)
    assert (letter.key, letter.run_id) == ("b", summary.run_id)


def test_late_counts_only_loaded_records_behind_the_watermark(db: str, write_jsonl: Any) -> None:
    """`late` counts late records that load, not late ones that are stale nor ones ahead of it."""
    run(write_jsonl([event("a", at(12)), event("b", at(10))]), db)
    summary = run(
        write_jsonl(
            [
                event("c", at(11)),  # new key, late: loads
                event("b", at(11)),  # newer than the stored 10:00, late: loads
                event("c", at(10.5)),  # late, older than c's 11:00 just before it: stale
                event("d", at(13)),  # ahead of the watermark: loads, not late
            ]
        ),
        db,
    )
    assert (summary.loaded, summary.late, summary.stale, summary.skipped) == (3, 2, 1, 0)
    [(stored,)] = fetch(db, f"SELECT late FROM run_log WHERE run_id = {summary.run_id}")
    assert stored == 2


def test_sample_rerun_skips_all_seven(db: str, sample: str) -> None:
    """The sample's rerun stages, loads and rejects nothing, adds no dead letter, skips all 7."""
    first = run(sample, db)
    again = run(sample, db)
    assert (first.staged, first.loaded, first.rejected, first.late) == (5, 5, 2, 0)
    assert counts(again) == {
        "input_records": 7,
        "staged": 0,
        "loaded": 0,
        "late": 0,
        "stale": 0,
        "skipped": 7,
        "rejected": 0,
    }
    assert again.dead_letters == 0
    assert len(stored_letters(db)) == 2


def test_lookback_stages_records_within_it_and_skips_covered_ones_beyond(
    db: str, write_jsonl: Any
) -> None:
    """Within --lookback a record is staged without the coverage check (stale if older); beyond it,
    a covered record is still skipped."""
    run(write_jsonl([event("a", at(12)), event("b", at(12))]), db)
    summary = run(
        write_jsonl(
            [
                event("a", at(11.5)),  # within the hour, older than stored: stale
                event("c", at(11.5)),  # within the hour, new: loads, late
                event("b", at(10)),  # beyond the hour, covered: skipped
            ]
        ),
        db,
        RunOptions(lookback=timedelta(hours=1)),
    )
    assert counts(summary) == {
        "input_records": 3,
        "staged": 2,
        "loaded": 1,
        "late": 1,
        "stale": 1,
        "skipped": 1,
        "rejected": 0,
    }
    assert ("stale", "a", f"kept ts {at(12)} over {at(11.5)}") in lineage(db, summary.run_id)


# -- the CLI --------------------------------------------------------------------------------------


def test_cli_json_summary_includes_late(db: str, write_jsonl: Any, runner: CliRunner) -> None:
    """`capstone run --json` reports `late`: 0 on a first run, then the late records loaded."""
    first = runner.invoke(
        app, ["run", "--input", write_jsonl([event("a", at(12))]), "--db", db, "--json"]
    )
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["late"] == 0
    late = write_jsonl([event("b", at(11)), event("a", at(11))])
    result = runner.invoke(app, ["run", "--input", late, "--db", db, "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert (printed["late"], printed["loaded"], printed["skipped"]) == (1, 1, 1)
