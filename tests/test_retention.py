"""Retention: `capstone prune` and a pipeline's `keep_lineage`."""

from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from capstone import RunOptions, run
from capstone.cli import app
from capstone.retention import cutoff
from capstone.spec import PipelineSpec
from tests.conftest import change, event, fetch, stored_letters


def age(db: str, run_id: int, finished: str) -> None:
    """Make a run look as if it had finished at `finished`."""
    change(db, f"UPDATE run_log SET finished_at = '{finished}' WHERE run_id = {run_id}")


def lineage_runs(db: str) -> list[int]:
    return [row[0] for row in fetch(db, "SELECT DISTINCT run_id FROM lineage ORDER BY run_id")]


def prune(runner: CliRunner, db: str, *args: str, input: str | None = None) -> Any:
    return runner.invoke(app, ["prune", "--db", db, *args], input=input)


def two_runs(db: str, sample: str) -> None:
    """Run 1 finished on 2025-02-01, run 2 (the same file, forced) now."""
    run(sample, db)
    run(sample, db, RunOptions(force=True))
    age(db, 1, "2025-02-01T00:00:00")


def test_prune_by_date_removes_lineage_of_runs_finished_before_it(
    runner: CliRunner, db: str, sample: str
) -> None:
    """--before DATE removes the lineage of the runs that finished before it and no other."""
    two_runs(db, sample)
    result = prune(runner, db, "--before", "2025-03-01", "--yes")
    assert result.exit_code == 0, result.output
    assert (
        "pruned pipeline events: 1 run (run 1) finished before 2025-03-01T00:00:00: "
        "12 lineage rows, 0 resolved dead letters"
    ) in result.stdout
    assert lineage_runs(db) == [2]


def test_prune_by_duration_counts_back_from_now(runner: CliRunner, db: str, sample: str) -> None:
    """--before 90d prunes a run that finished 100 days ago and keeps today's."""
    two_runs(db, sample)
    age(db, 1, cutoff("100d"))
    result = prune(runner, db, "--before", "90d", "--yes", "--json")
    assert result.exit_code == 0, result.output
    [pruned] = orjson.loads(result.stdout)
    assert (pruned["runs"], pruned["first_run"], pruned["lineage_rows"]) == (1, 1, 12)
    assert lineage_runs(db) == [2]


def test_a_dry_run_shows_what_it_would_remove_and_removes_nothing(
    runner: CliRunner, db: str, sample: str
) -> None:
    """--dry-run counts the rows and changes nothing, without asking."""
    two_runs(db, sample)
    result = prune(runner, db, "--before", "2025-03-01", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would prune pipeline events: 1 run (run 1)" in result.stdout
    assert "12 lineage rows" in result.stdout
    assert lineage_runs(db) == [1, 2]
    assert fetch(db, "SELECT COUNT(*) FROM run_log WHERE pruned_at IS NOT NULL") == [(0,)]


def test_prune_asks_first_and_a_no_changes_nothing(runner: CliRunner, db: str, sample: str) -> None:
    """Without --yes it shows what it would remove and asks; `n` aborts, `y` prunes."""
    two_runs(db, sample)
    refused = prune(runner, db, "--before", "2025-03-01", input="n\n")
    assert refused.exit_code == 1
    assert "would prune pipeline events: 1 run (run 1)" in refused.stderr
    assert lineage_runs(db) == [1, 2]
    agreed = prune(runner, db, "--before", "2025-03-01", input="y\n")
    assert agreed.exit_code == 0, agreed.output
    assert lineage_runs(db) == [2]


def test_run_log_rows_stay_marked_with_their_counts(
    runner: CliRunner, db: str, sample: str
) -> None:
    """A pruned run keeps its run-log row and counts, marked pruned; `runs ID` says so."""
    two_runs(db, sample)
    before = orjson.loads(runner.invoke(app, ["runs", "--db", db, "--json"]).stdout)
    prune(runner, db, "--before", "2025-03-01", "--yes")
    after = orjson.loads(runner.invoke(app, ["runs", "--db", db, "--json"]).stdout)
    assert [r["run_id"] for r in after] == [2, 1]
    assert after[1]["pruned_at"] is not None
    assert "pruned_at" not in after[0]
    counts = ("input_records", "staged", "loaded", "rejected", "skipped", "lineage_entries")
    assert [[r[c] for c in counts] for r in after] == [[r[c] for c in counts] for r in before]
    detail = runner.invoke(app, ["runs", "1", "--db", db])
    assert "counts kept" in detail.stdout


def test_report_by_step_totals_the_same_after_pruning(
    runner: CliRunner, db: str, sample: str
) -> None:
    """report --by-step reads per-run step counts, which pruning keeps."""
    two_runs(db, sample)
    before = runner.invoke(app, ["report", "--db", db, "--json"]).stdout
    one_before = runner.invoke(app, ["report", "--run", "1", "--db", db, "--json"]).stdout
    prune(runner, db, "--before", "2025-03-01", "--yes")
    assert runner.invoke(app, ["report", "--db", db, "--json"]).stdout == before
    assert runner.invoke(app, ["report", "--run", "1", "--db", db, "--json"]).stdout == one_before


def test_lineage_of_a_key_says_its_history_was_pruned(
    runner: CliRunner, db: str, sample: str
) -> None:
    """lineage KEY shows what is left and a line naming the cutoff and the pruned runs; a key
    whose whole history was pruned fails with the same line."""
    two_runs(db, sample)
    prune(runner, db, "--before", "2025-03-01", "--yes")
    shown = runner.invoke(app, ["lineage", "evt-001", "--db", db])
    assert shown.exit_code == 0, shown.output
    assert "history before 2025-03-01T00:00:00 was pruned (run 1)" in shown.stdout
    as_json = runner.invoke(app, ["lineage", "evt-001", "--db", db, "--json"])
    assert [entry["run_id"] for entry in orjson.loads(as_json.stdout)] == [2]
    assert as_json.stderr == "capstone: history before 2025-03-01T00:00:00 was pruned (run 1)\n"
    prune(runner, db, "--before", "2999-01-01", "--yes")
    gone = runner.invoke(app, ["lineage", "evt-001", "--db", db])
    assert gone.exit_code == 1
    assert "history before 2999-01-01T00:00:00 was pruned (runs 1-2)" in gone.stderr


def test_prune_removes_resolved_dead_letters_and_keeps_open_ones(
    runner: CliRunner, db: str, sample: str
) -> None:
    """Letters a pruned run dismissed go; open letters stay whatever their age."""
    run(sample, db)
    dismissed = runner.invoke(app, ["dead-letters", "dismiss", "--id", "1", "--db", db])
    assert dismissed.exit_code == 0, dismissed.output
    result = prune(runner, db, "--before", "2999-01-01", "--yes")
    assert "1 resolved dead letter" in result.stdout
    assert [letter.id for letter in stored_letters(db, include_resolved=True)] == [2]


def test_nothing_to_prune_says_so(runner: CliRunner, db: str, sample: str) -> None:
    """A cutoff before every run prunes nothing and says so, exit 0."""
    run(sample, db)
    result = prune(runner, db, "--before", "2000-01-01", "--pipeline", "events")
    assert result.exit_code == 0, result.output
    assert "nothing to prune: no run of pipeline events" in result.stdout


def test_a_before_that_is_neither_date_nor_duration_is_a_usage_error(
    runner: CliRunner, db: str, sample: str
) -> None:
    """--before soon: exit 2 with one line naming both forms."""
    run(sample, db)
    result = prune(runner, db, "--before", "soon", "--yes")
    assert result.exit_code == 2
    assert "neither a date nor a duration" in result.stderr


def test_prune_reports_the_space(runner: CliRunner, db: str, write_jsonl: Any) -> None:
    """SQLite: the file's size and its free pages (--vacuum gives them back, shrinking it);
    PostgreSQL: the size of the lineage and dead_letters tables."""
    path = write_jsonl([event(f"k{i}", "2025-01-01T00:00:00") for i in range(3000)])
    run(path, db)
    result = prune(runner, db, "--before", "2999-01-01", "--yes", "--vacuum", "--json")
    assert result.exit_code == 0, result.output
    [pruned] = orjson.loads(result.stdout)
    assert pruned["lineage_rows"] == 6000
    if db.startswith("postgresql://"):
        assert pruned["free_after"] is None
        assert pruned["bytes_before"] > 0
    else:
        assert pruned["bytes_after"] < pruned["bytes_before"]
        assert pruned["bytes_released"] > 0


def test_sqlite_prune_without_vacuum_leaves_free_pages_for_later_runs(
    runner: CliRunner, db_path: str, write_jsonl: Any
) -> None:
    """Without --vacuum the file keeps its size, and the freed pages are said to be reusable."""
    run(write_jsonl([event(f"k{i}", "2025-01-01T00:00:00") for i in range(3000)]), db_path)
    result = prune(runner, db_path, "--before", "2999-01-01", "--yes")
    assert result.exit_code == 0, result.output
    assert "free pages later runs reuse (--vacuum returns them to the disk)" in result.stdout


def test_keep_lineage_prunes_after_each_run(db: str, sample: str) -> None:
    """A pipeline with keep_lineage = 90d prunes runs older than that after a run commits."""
    spec = PipelineSpec(name="events", target="target", keep_lineage="90d")
    run(sample, db, spec=spec)
    age(db, 1, cutoff("100d"))
    second = run(sample, db, RunOptions(force=True), spec=spec)
    assert second.status == "success"
    assert lineage_runs(db) == [2]
    assert fetch(db, "SELECT run_id FROM run_log WHERE pruned_at IS NOT NULL") == [(1,)]


def test_keep_lineage_from_the_config_file(tmp_path: Path) -> None:
    """keep_lineage is a pipeline setting read from capstone.toml, a duration."""
    from capstone.config import load_config

    path = tmp_path / "capstone.toml"
    path.write_text('[pipelines.feed]\nkeep_lineage = "90d"\n')
    spec = load_config(path).pipeline("feed")
    assert spec.keep_lineage is not None
    assert spec.keep_lineage.days == 90


def refuse_deletes(db: str) -> None:
    """A trigger that makes every DELETE from lineage_records fail, as a broken prune would."""
    if db.startswith("postgresql://"):
        change(
            db,
            "CREATE FUNCTION no_delete() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'lineage is read only'; END $$; "
            "CREATE TRIGGER no_delete BEFORE DELETE ON lineage_records "
            "FOR EACH STATEMENT EXECUTE FUNCTION no_delete()",
        )
        return
    change(
        db,
        "CREATE TRIGGER no_delete BEFORE DELETE ON lineage_records "
        "BEGIN SELECT RAISE(ABORT, 'lineage is read only'); END",
    )


def test_a_keep_lineage_prune_that_fails_keeps_the_run(
    db: str, sample: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A prune after the run that fails warns on stderr, and the run stands."""
    spec = PipelineSpec(name="events", target="target", keep_lineage="90d")
    run(sample, db)
    age(db, 1, cutoff("100d"))
    refuse_deletes(db)
    summary = run(sample, db, RunOptions(force=True), spec=spec)
    assert summary.status == "success"
    assert "capstone: warning: keep_lineage of pipeline events did not prune" in (
        capsys.readouterr().err
    )
    assert fetch(db, "SELECT status FROM run_log ORDER BY run_id") == [
        ("success",),
        ("success",),
    ]
    assert lineage_runs(db) == [1, 2]


def test_prune_names_the_space_each_backend_can_tell(
    runner: CliRunner, db: str, sample: str
) -> None:
    """The last line says what the backend measured: the SQLite file, or PostgreSQL's tables."""
    run(sample, db)
    result = prune(runner, db, "--before", "2999-01-01", "--yes")
    assert result.exit_code == 0, result.output
    last = result.stdout.splitlines()[-1]
    if db.startswith("postgresql://"):
        assert last.startswith("tables lineage and dead_letters: ")
        assert "VACUUM FULL returns it to the disk" in last
    else:
        assert last.startswith("database file: ")


def test_prune_waits_for_the_lock_and_changes_nothing_without_it(
    runner: CliRunner, db_path: str, sample: str
) -> None:
    """While another writer holds the database (a run), prune waits --lock-timeout, then fails
    with one line and removes nothing."""
    import sqlite3

    run(sample, db_path)
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        result = prune(runner, db_path, "--before", "2999-01-01", "--yes", "--lock-timeout", "0.2")
    finally:
        other.close()
    assert result.exit_code == 1
    assert "is busy" in result.stderr
    assert lineage_runs(db_path) == [1]
