"""Inspection commands: lineage KEY, runs ID, runs --failed."""

from pathlib import Path

import orjson
from typer.testing import CliRunner

from capstone import RunOptions, run
from capstone.cli import app
from capstone.store import open_store
from capstone.summary import RunStatus


def test_lineage_traces_every_step_of_a_key(runner: CliRunner, db: str, sample: str) -> None:
    """lineage evt-003 shows both records' stage and load steps, with source and position."""
    run(sample, db)
    run(sample, db, RunOptions(force=True))
    result = runner.invoke(app, ["lineage", "evt-003", "--db", db, "--json"])
    assert result.exit_code == 0, result.output
    steps = [(e["run_id"], e["position"], e["step"]) for e in orjson.loads(result.stdout)]
    assert steps == [
        (1, 2, "stage"),
        (1, 2, "load"),
        (1, 6, "stage"),
        (1, 6, "load"),
        (2, 2, "skip"),
        (2, 6, "skip"),
    ]
    assert orjson.loads(result.stdout)[0]["source"].endswith("sample_input.txt")


def test_lineage_of_unknown_key_fails_clearly(runner: CliRunner, db: str, sample: str) -> None:
    """An unknown key exits 1 with one line."""
    run(sample, db)
    for extra in ([], ["--json"]):
        result = runner.invoke(app, ["lineage", "nope", "--db", db, *extra])
        assert result.exit_code == 1
        assert "no lineage for key 'nope'" in result.stderr
        assert result.stdout == ""


def test_run_detail_has_steps_and_reasons(runner: CliRunner, db: str, sample: str) -> None:
    """runs ID --json gives the run with counts per step and per reject reason."""
    run(sample, db)
    result = runner.invoke(app, ["runs", "1", "--db", db, "--json"])
    detail = orjson.loads(result.stdout)
    assert detail["by_step"] == {"stage": 5, "load": 5, "stale": 0, "reject": 2, "skip": 0}
    assert detail["by_reason"] == {"key.string_too_short": 1, "value.float_parsing": 1}
    table = runner.invoke(app, ["runs", "1", "--db", db])
    assert "value.float_parsing" in table.stdout


def test_runs_failed_lists_only_failures(runner: CliRunner, db: str, sample: str) -> None:
    """runs --failed shows failed runs with their error."""
    run(sample, db)
    store = open_store(db)
    store.set_watermark("events", "bad")
    store.close()
    runner.invoke(app, ["run", "--input", sample, "--db", db])
    result = runner.invoke(app, ["runs", "--failed", "--db", db, "--json"])
    [failed] = orjson.loads(result.stdout)
    assert failed["status"] == "failed"
    assert "reset-watermark" in failed["error"]


def test_runs_failed_includes_interrupted_and_killed_runs(
    runner: CliRunner, db: str, sample: str
) -> None:
    """ "Did anything go wrong?" covers runs stopped by a signal or killed, not only failures."""
    run(sample, db)
    store = open_store(db)
    stopped = store.begin_run("events", "x.jsonl")
    store.end_run(
        stopped.model_copy(update={"status": RunStatus.INTERRUPTED, "error": "by signal"})
    )
    store.close()
    result = runner.invoke(app, ["runs", "--failed", "--db", db, "--json"])
    assert [r["status"] for r in orjson.loads(result.stdout)] == ["interrupted"]


def test_dead_letters_options_before_export_are_refused(
    runner: CliRunner, db: str, sample: str, tmp_path: Path
) -> None:
    """`dead-letters --db X export` would export from the default database; it is a usage error
    naming the options to move."""
    run(sample, db)
    out = tmp_path / "fix.jsonl"
    result = runner.invoke(app, ["dead-letters", "--db", db, "export", "--output", str(out)])
    assert result.exit_code == 2
    assert "--db must come after `export`" in result.stderr
    assert not out.exists()


def test_dead_letters_say_when_the_limit_cut_the_list(
    runner: CliRunner, db: str, sample: str
) -> None:
    """A list cut at --limit says so on stderr (JSON on stdout stays an array); a whole one
    says nothing."""
    run(sample, db)
    cut = runner.invoke(app, ["dead-letters", "--db", db, "--json", "--limit", "1"])
    assert len(orjson.loads(cut.stdout)) == 1
    assert cut.stderr == "capstone: showing the first 1; --limit N shows more\n"
    whole = runner.invoke(app, ["dead-letters", "--db", db, "--json", "--limit", "2"])
    assert len(orjson.loads(whole.stdout)) == 2
    assert whole.stderr == ""
