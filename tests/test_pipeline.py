"""The pipeline end to end through the library API, on every backend."""

from datetime import timedelta
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from capstone import RunOptions, run
from capstone.errors import ConfigError, InterruptedRun, WatermarkError
from capstone.pipeline import replay, status
from capstone.spec import EVENTS, PipelineSpec
from capstone.store import Store, open_store
from capstone.summary import RunSummary
from capstone.timeutil import parse_duration
from tests.conftest import event, fetch


def target_rows(db: str) -> dict[str, tuple[str, float, str]]:
    rows = fetch(db, "SELECT key, name, value, ts FROM target")
    return {key: (name, value, str(ts).replace(" ", "T")) for key, name, value, ts in rows}


class TestSample:
    def test_first_run_matches_the_seed(self, db: str, sample: str) -> None:
        """The seed's sample gives exactly the seed's expected counts and watermark."""
        summary = run(sample, db)
        assert summary.model_dump(
            include={
                "input_records",
                "staged",
                "loaded",
                "rejected",
                "dead_letters",
                "lineage_entries",
                "watermark",
            }
        ) == {
            "input_records": 7,
            "staged": 5,
            "loaded": 5,
            "rejected": 2,
            "dead_letters": 2,
            "lineage_entries": 12,
            "watermark": "2025-01-15T12:00:00",
        }
        assert summary.status == "success"

    def test_newest_evt_003_wins(self, db: str, sample: str) -> None:
        """Both evt-003 records load in order, so the target holds the 12:00 purchase_updated."""
        run(sample, db)
        assert target_rows(db)["evt-003"] == ("purchase_updated", 59.99, "2025-01-15T12:00:00")
        assert len(target_rows(db)) == 4

    def test_rerun_changes_nothing(self, db: str, sample: str) -> None:
        """A second run of the same file skips every record and writes no dead letter."""
        run(sample, db)
        again = run(sample, db)
        assert (again.staged, again.loaded, again.rejected, again.dead_letters) == (0, 0, 0, 0)
        assert again.skipped == 7
        assert again.watermark == "2025-01-15T12:00:00"


class TestBreakAndFix:
    def test_stale_record_after_watermark_reset_keeps_newer_value(
        self, db: str, sample: str, write_jsonl: Any
    ) -> None:
        """With the watermark cleared, an older evt-003 is staged but the guard keeps 59.99."""
        run(sample, db)
        store = open_store(db)
        store.set_watermark("events", None)
        store.close()
        stale = write_jsonl([event("evt-003", "2025-01-15T10:00:00", 1.0, "purchase_stale")])
        summary = run(stale, db)
        assert (summary.staged, summary.loaded, summary.stale) == (1, 0, 1)
        assert target_rows(db)["evt-003"][1] == 59.99

    def test_all_invalid_batch_succeeds_with_everything_dead_lettered(
        self, db: str, write_jsonl: Any
    ) -> None:
        """A batch of only rejects succeeds, dead-letters all of it and leaves the watermark alone."""
        run(write_jsonl([event("a", "2025-01-01T00:00:00")]), db)
        bad = write_jsonl(
            [{"key": "", "name": "x", "value": 1, "ts": "2025-02-01T00:00:00"}, "not json", "[1]"]
        )
        summary = run(bad, db)
        assert summary.status == "success"
        assert (summary.rejected, summary.dead_letters, summary.staged) == (3, 3, 0)
        assert summary.watermark == "2025-01-01T00:00:00"

    def test_corrupted_watermark_is_refused_and_run_logged_failed(
        self, db: str, sample: str
    ) -> None:
        """A watermark that does not parse stops the run; only a failed run row is written."""
        store = open_store(db)
        store.set_watermark("events", "garbage")
        store.close()
        with pytest.raises(WatermarkError, match="reset-watermark"):
            run(sample, db)
        store = open_store(db)
        [failed] = store.runs()
        assert failed.status == "failed"
        assert "garbage" in (failed.error or "")
        assert store.step_counts() == []
        store.close()
        assert target_rows(db) == {}

    def test_future_watermark_is_refused(self, db: str, sample: str) -> None:
        """A watermark far in the future would skip everything, so it is refused."""
        store = open_store(db)
        store.set_watermark("events", "2999-01-01T00:00:00")
        store.close()
        with pytest.raises(WatermarkError, match="future"):
            run(sample, db)


class TestWatermark:
    def test_rejects_never_move_the_watermark(self, db: str, write_jsonl: Any) -> None:
        """An invalid record with a newer ts does not advance the watermark."""
        path = write_jsonl(
            [
                event("a", "2025-01-01T00:00:00"),
                {"key": "b", "name": "n", "value": "x", "ts": "2025-06-01T00:00:00"},
            ]
        )
        assert run(path, db).watermark == "2025-01-01T00:00:00"

    def test_lookback_lets_late_records_through_and_guard_keeps_it_idempotent(
        self, db: str, write_jsonl: Any
    ) -> None:
        """Within the lookback, a record is re-staged but the guard refuses it as stale; behind
        it, a late record of a new key loads and one the target holds is skipped."""
        first = write_jsonl([event("a", "2025-01-01T10:00:00"), event("b", "2025-01-01T12:00:00")])
        run(first, db)
        again = run(first, db, RunOptions(lookback=timedelta(hours=3), force=True))
        assert (again.staged, again.loaded, again.stale, again.skipped) == (2, 0, 2, 0)
        late = write_jsonl(
            [
                event("c", "2025-01-01T11:30:00"),
                event("d", "2025-01-01T08:00:00"),
                event("a", "2025-01-01T09:00:00"),
            ]
        )
        summary = run(late, db, RunOptions(lookback=timedelta(hours=1)))
        assert (summary.loaded, summary.late, summary.skipped) == (2, 2, 1)

    def test_each_pipeline_has_its_own_watermark(self, db: str, sample: str) -> None:
        """A run of another pipeline does not skip what the first pipeline saw."""
        run(sample, db)
        other = run(sample, db, spec=PipelineSpec(name="replica"))
        assert other.skipped == 0
        assert other.staged == 5


class TestLineageAndAccounting:
    def test_lineage_counts_per_step_match_the_summary(self, db: str, sample: str) -> None:
        """The per-run step counts equal the summary's counts."""
        summary = run(sample, db)
        store = open_store(db)
        counts = {c.step: c.count for c in store.step_counts(summary.run_id)}
        store.close()
        [(lineage,)] = fetch(db, f"SELECT COUNT(*) FROM lineage WHERE run_id = {summary.run_id}")
        assert counts == {"stage": 5, "load": 5, "reject": 2}
        assert lineage == summary.lineage_entries == 12

    def test_extra_fields_are_kept_as_attributes(self, db: str, write_jsonl: Any) -> None:
        """Unknown fields are stored with the record, not dropped."""
        run(write_jsonl([event("a", "2025-01-01T00:00:00", region="eu", tags=[1, 2])]), db)
        [(attributes,)] = fetch(db, "SELECT attributes FROM target")
        loaded = orjson.loads(attributes) if isinstance(attributes, str) else attributes
        assert loaded == {"region": "eu", "tags": [1, 2]}

    def test_same_bad_input_twice_is_one_dead_letter(self, db: str, write_jsonl: Any) -> None:
        """Seeing the same rejected record again does not duplicate its dead letter."""
        bad = write_jsonl(["{oops"])
        first = run(bad, db)
        second = run(bad, db, RunOptions(force=True))
        assert (first.dead_letters, second.dead_letters) == (1, 0)
        assert second.rejected == 1

    def test_offsets_are_converted_to_utc(self, db: str, write_jsonl: Any) -> None:
        """A ts with an offset is stored as naive UTC."""
        run(write_jsonl([event("a", "2025-01-01T02:00:00+02:00")]), db)
        assert target_rows(db)["a"][2] == "2025-01-01T00:00:00"


def test_lookback_and_tolerance_longer_than_the_calendar_do_not_crash(
    db_path: str, write_jsonl: Any
) -> None:
    """A lookback reaching before year 1 skips nothing; a huge tolerance lets any date in."""
    first = write_jsonl([event("a", "2025-01-02T00:00:00")])
    run(first, db_path)
    late = write_jsonl([event("b", "2024-01-01T00:00:00"), event("c", "2999-01-01T00:00:00")])
    huge = timedelta(days=999_999_999)
    summary = run(late, db_path, RunOptions(lookback=huge, future_tolerance=huge))
    assert (summary.staged, summary.skipped, summary.rejected) == (2, 0, 0)


def test_a_duration_beyond_what_python_can_hold_is_a_config_error() -> None:
    """1,000,000,000 days is refused with a readable message, not an OverflowError."""
    with pytest.raises(ConfigError, match="longer than 999,999,999 days"):
        parse_duration("1000000000d")


def test_a_negative_lookback_is_refused_before_it_can_skip_newer_records() -> None:
    """Run options refuse a negative span: it would skip records newer than the watermark."""
    with pytest.raises(ValidationError, match="a duration cannot be negative"):
        RunOptions(lookback=timedelta(hours=-2))
    with pytest.raises(ValidationError, match="a duration cannot be negative"):
        RunOptions(future_tolerance=timedelta(seconds=-1))


def test_nan_in_an_extra_field_is_dead_lettered(db_path: str, write_jsonl: Any) -> None:
    """`"x": NaN` is not JSON; the record is rejected instead of stored with x = null."""
    line = '{"key": "a", "name": "n", "value": 1, "ts": "2025-01-01T00:00:00", "x": NaN}'
    summary = run(write_jsonl([line]), db_path)
    assert (summary.staged, summary.rejected) == (0, 1)
    assert fetch(db_path, "SELECT reason FROM dead_letters") == [("malformed.json",)]


def test_a_broken_element_of_a_json_array_is_dead_lettered(db_path: str, tmp_path: Any) -> None:
    """`{bad}` inside an array is a malformed.json dead letter; the good elements load."""
    good = '{"key": "%s", "name": "n", "value": 1, "ts": "2025-01-01T00:00:00"}'
    path = tmp_path / "events.json"
    path.write_text(f"[{good % 'a'}, {{bad}}, {good % 'b'}]")
    summary = run(str(path), db_path)
    assert (summary.staged, summary.rejected) == (2, 1)
    assert fetch(db_path, "SELECT position, reason, raw FROM dead_letters") == [
        (1, "malformed.json", "{bad}")
    ]


class TestHooks:
    def test_on_commit_reads_the_open_store_after_the_commit(self, db: str, sample: str) -> None:
        """on_commit gets the summary and the store, which already holds the committed run."""
        seen: list[tuple[int, str]] = []

        def committed(summary: RunSummary, store: Store) -> None:
            [logged] = store.runs()
            seen.append((logged.run_id, logged.status))

        summary = run(sample, db, on_commit=committed)
        assert seen == [(summary.run_id, "success")]

    def test_ctrl_c_in_on_commit_says_the_run_is_kept(self, db: str, sample: str) -> None:
        """An interrupt in on_commit raises InterruptedRun saying the committed run is kept."""

        def interrupted(summary: RunSummary, store: Store) -> None:
            raise KeyboardInterrupt

        with pytest.raises(InterruptedRun, match="after run 1 committed; its results are kept"):
            run(sample, db, on_commit=interrupted)
        assert fetch(db, "SELECT status FROM run_log") == [("success",)]

    def test_on_failure_gets_the_failed_runs_row(self, db: str, sample: str) -> None:
        """A failed run calls on_failure with its run-log row, then raises its own error."""
        store = open_store(db)
        store.set_watermark("events", "yesterday-ish")
        store.close()
        ended: list[RunSummary] = []
        with pytest.raises(WatermarkError):
            run(sample, db, on_failure=lambda summary, _store: ended.append(summary))
        assert [(e.run_id, e.status) for e in ended] == [(1, "failed")]

    def test_progress_starts_at_zero_and_ends_at_every_record(
        self, db: str, write_jsonl: Any
    ) -> None:
        """The progress callback is called as the run starts, then after each batch."""
        records = [event(f"k{n}", "2025-01-01T00:00:00") for n in range(5)]
        calls: list[int] = []
        run(write_jsonl(records), db, RunOptions(batch_size=2), lambda n, _bytes: calls.append(n))
        assert calls == [0, 2, 4, 5]

    def test_replay_opens_the_database_and_runs_on_commit(self, db: str, sample: str) -> None:
        """replay() re-validates stored dead letters as a run and calls on_commit after it."""
        run(sample, db)
        seen: list[int] = []
        summary = replay(db, on_commit=lambda summary, _store: seen.append(summary.run_id))
        assert (summary.input_records, summary.rejected, seen) == (2, 2, [2])


class TestStatus:
    def test_without_a_database_pipelines_have_no_state(self, db_path: str) -> None:
        """status() lists the pipelines of a database that does not exist, without state."""
        [row] = status(db_path, [EVENTS])
        assert (row.pipeline, row.key, row.fields["value"]) == ("events", ("key",), "float")
        assert (row.schema_version, row.watermark, row.last_run) == (None, None, None)

    def test_after_a_run_its_state_is_shown(self, db: str, sample: str) -> None:
        """After a run, status() has the schema version, watermark and last run."""
        summary = run(sample, db)
        [row] = status(db, [EVENTS])
        assert (row.schema_version, row.watermark) == (1, "2025-01-15T12:00:00")
        assert row.last_run is not None
        assert (row.last_run.run_id, row.last_run.loaded) == (summary.run_id, 5)
