"""Report commands: report --by-step, runs, reset-watermark, help and version."""

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from capstone import RunOptions, __version__, run
from capstone.cli import app
from capstone.config import load_config
from capstone.errors import StoreError
from capstone.store import open_store


def test_report_by_step_sums_all_runs(runner: CliRunner, db: str, sample: str) -> None:
    """report --by-step --json counts lineage per step over all runs, or one with --run."""
    first = run(sample, db)
    run(sample, db, RunOptions(force=True))
    total = runner.invoke(app, ["report", "--by-step", "--db", db, "--json"])
    assert total.exit_code == 0, total.output
    assert json.loads(total.stdout)["by_step"] == {
        "stage": 5,
        "load": 5,
        "stale": 0,
        "reject": 2,
        "skip": 7,
    }
    one = runner.invoke(
        app, ["report", "--by-step", "--run", str(first.run_id), "--db", db, "--json"]
    )
    assert json.loads(one.stdout)["by_step"]["skip"] == 0


def test_report_table_lists_every_step(runner: CliRunner, db: str, sample: str) -> None:
    """The report table shows every step, including those with zero rows."""
    run(sample, db)
    result = runner.invoke(app, ["report", "--by-step", "--db", db])
    for step in ("stage", "load", "stale", "reject", "skip", "total"):
        assert step in result.stdout


def test_report_on_unknown_run_fails(runner: CliRunner, db: str, sample: str) -> None:
    """--run with an id that does not exist exits 1 and points at `capstone runs`."""
    run(sample, db)
    result = runner.invoke(app, ["report", "--run", "99", "--db", db])
    assert result.exit_code == 1
    assert "capstone runs" in result.stderr


def test_runs_json_lists_history_newest_first(runner: CliRunner, db: str, sample: str) -> None:
    """runs --json is an array of runs with counts and watermark before and after."""
    run(sample, db)
    run(sample, db)
    result = runner.invoke(app, ["runs", "--db", db, "--json"])
    history = json.loads(result.stdout)
    assert [r["run_id"] for r in history] == [2, 1]
    assert history[0]["watermark_before"] == history[0]["watermark"] == "2025-01-15T12:00:00"
    assert history[1]["watermark_before"] is None
    assert all(r["status"] == "success" for r in history)


def test_runs_on_missing_database_says_so(runner: CliRunner, db_path: str) -> None:
    """Report commands do not create a database; they say it is missing."""
    result = runner.invoke(app, ["runs", "--db", db_path])
    assert result.exit_code == 1
    assert "does not exist" in result.stderr


def test_reset_watermark_clears_and_sets(runner: CliRunner, db: str, sample: str) -> None:
    """reset-watermark --yes clears it; --to sets a validated value in canonical form."""
    run(sample, db)
    cleared = runner.invoke(app, ["reset-watermark", "--db", db, "--yes"])
    assert cleared.exit_code == 0, cleared.output
    store = open_store(db)
    assert store.get_watermark("events") is None
    store.close()
    runner.invoke(
        app, ["reset-watermark", "--db", db, "--yes", "--to", "2025-01-15T10:00:00+01:00"]
    )
    store = open_store(db)
    assert store.get_watermark("events") == "2025-01-15T09:00:00"
    store.close()


def test_reset_watermark_refuses_bad_values(runner: CliRunner, db: str, sample: str) -> None:
    """--to must be a timestamp that has passed; anything else is a bad value, exit 2."""
    run(sample, db)
    for bad in ("tomorrow", "2999-01-01T00:00:00"):
        result = runner.invoke(app, ["reset-watermark", "--db", db, "--yes", "--to", bad])
        assert result.exit_code == 2
        assert len(result.stderr.splitlines()) == 1


def test_reset_watermark_waits_for_a_run_in_progress_then_refuses(
    runner: CliRunner, db: str, sample: str
) -> None:
    """A reset during a run of the pipeline would be overwritten by the run's commit (or undo
    it): it takes the pipeline's lock, and names the run when it cannot."""
    from capstone.store import Store

    run(sample, db)
    store: Store = open_store(db)
    spec = load_config(None).pipeline("events")
    running = store.begin_run("events", "busy.jsonl")
    try:
        with store.run_transaction(running, 0, spec):
            result = runner.invoke(
                app, ["reset-watermark", "--db", db, "--yes", "--lock-timeout", "0"]
            )
    finally:
        store.close()
    assert result.exit_code == 1, result.output
    assert f"in progress (run {running.run_id})" in result.stderr
    assert _watermark(db) == "2025-01-15T12:00:00"


def test_reset_watermark_refuses_a_value_changed_since_it_was_read(db: str, sample: str) -> None:
    """The reset replaces the value the user confirmed; if a run stored another meanwhile,
    nothing changes and the error says to look again."""
    run(sample, db)
    store = open_store(db)
    try:
        with pytest.raises(StoreError, match="is now 2025-01-15T12:00:00, not -"):
            store.reset_watermark("events", None, expected=None, lock_timeout=0)
    finally:
        store.close()
    assert _watermark(db) == "2025-01-15T12:00:00"


def _watermark(db: str) -> str | None:
    store = open_store(db)
    try:
        return store.get_watermark("events")
    finally:
        store.close()


def test_reset_watermark_asks_first(runner: CliRunner, db: str, sample: str) -> None:
    """Without --yes, answering no leaves the watermark as it was."""
    run(sample, db)
    result = runner.invoke(app, ["reset-watermark", "--db", db], input="n\n")
    assert result.exit_code == 1
    store = open_store(db)
    assert store.get_watermark("events") == "2025-01-15T12:00:00"
    store.close()


COMMANDS = [
    ["run"],
    ["watch"],
    ["report"],
    ["runs"],
    ["files"],
    ["reset-watermark"],
    ["prune"],
    ["dead-letters"],
    ["dead-letters", "export"],
    ["dead-letters", "dismiss"],
    ["replay"],
    ["lineage"],
    ["init"],
    ["pipelines"],
]


def test_the_command_list_is_complete() -> None:
    """COMMANDS names every registered command, so the help test below covers all of them."""
    top = {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands}  # type: ignore[union-attr]
    groups = {g.name for g in app.registered_groups}
    assert top | groups == {command[0] for command in COMMANDS}


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(runner: CliRunner, command: list[str]) -> None:
    """-h works on every command and shows an example."""
    result = runner.invoke(app, [*command, "-h"])
    assert result.exit_code == 0
    assert "Example" in result.stdout


def test_help_paragraphs_wrap_to_the_terminal(runner: CliRunner) -> None:
    """A docstring's line breaks (at 100 columns) do not show: a paragraph fills the screen."""
    result = runner.invoke(app, ["replay", "-h"], env={"COLUMNS": "200"})
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert any(
        line.startswith("A replay is a run") and line.endswith("timestamp guard.") for line in lines
    )


def test_version(runner: CliRunner) -> None:
    """--version prints the package version."""
    result = runner.invoke(app, ["--version"])
    assert result.stdout.strip() == f"capstone {__version__}"


def _narrow(monkeypatch: pytest.MonkeyPatch, width: int) -> None:
    from capstone.cli._output import console

    monkeypatch.setattr(console, "width", width)


def test_a_run_card_on_a_narrow_screen_folds_values_instead_of_cutting_them(
    runner: CliRunner, db: str, sample: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 40 columns the watermark and the source fold onto more lines but stay whole."""
    run(sample, db)
    _narrow(monkeypatch, 40)
    result = runner.invoke(app, ["runs", "1", "--db", db])
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout
    values = "".join(
        line.split("│")[2].strip() for line in result.stdout.splitlines() if line.count("│") == 3
    )
    assert "-→2025-01-15T12:00:00" in values.replace(" ", "")
    assert "data/sample_input.txt" in values


def test_runs_fit_an_80_column_screen_with_every_value_whole(
    runner: CliRunner, db: str, sample: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On 80 columns `runs` leaves out the columns that follow from the others (staged, stale)
    and says so, instead of squeezing ids and counts to nothing."""
    run(sample, db)
    run(sample, db)
    _narrow(monkeypatch, 80)
    result = runner.invoke(app, ["runs", "--db", db])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert any(line.startswith("│  2 │ success │  7 │") for line in lines)
    assert any(line.startswith("│  1 │ success │  7 │") for line in lines)
    assert "2025-01-15T12:00:00" in result.stdout
    assert "not shown on this narrow screen" in result.stdout
    assert "staged" in result.stdout.split("not shown")[1]


def test_runs_show_every_column_on_a_wide_screen(
    runner: CliRunner, db: str, sample: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With room, `runs` shows every column and no note about hidden ones."""
    run(sample, db)
    _narrow(monkeypatch, 160)
    result = runner.invoke(app, ["runs", "--db", db])
    header = next(line for line in result.stdout.splitlines() if "status" in line)
    for column in ("pipeline", "started (UTC)", "staged", "loaded", "stale", "watermark"):
        assert column in header
    assert "not shown" not in result.stdout


def test_dead_letters_on_80_columns_keep_reason_codes_whole(
    runner: CliRunner, db: str, sample: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reason codes and ids are never cut; only the raw payload gives way, clipped with …."""
    run(sample, db)
    _narrow(monkeypatch, 80)
    result = runner.invoke(app, ["dead-letters", "--db", db])
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    assert "key.string_too_short" in result.stdout
    assert "value.float_parsing" in result.stdout
    assert '{"key": "evt-005"' in result.stdout
    assert "…" in result.stdout
    header = next(line for line in result.stdout.splitlines() if "reason" in line)
    assert "resolved" not in header  # the column appears only once a letter is resolved


def test_lineage_on_a_narrow_screen_keeps_the_steps_and_details(
    runner: CliRunner, db: str, sample: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On 60 columns the lineage drops pipeline and source (named below it), not the story."""
    run(sample, db)
    _narrow(monkeypatch, 60)
    result = runner.invoke(app, ["lineage", "evt-001", "--db", db])
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) <= 60
    assert "ts 2025-01-15T08:00:00" in result.stdout
    assert "not shown on this narrow screen: pipeline, source" in " ".join(result.stdout.split())


def test_too_narrow_for_any_table_lists_each_row_as_lines(
    runner: CliRunner, db: str, sample: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When even the essential columns do not fit, each run is printed as `column value` lines,
    so no id or count is ever cut."""
    run(sample, db)
    _narrow(monkeypatch, 40)
    result = runner.invoke(app, ["runs", "--db", db])
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert max(len(line) for line in result.stdout.splitlines()) <= 40
    for expected in ("id              1", "status          success", "rejected        2"):
        assert expected in lines


def test_a_long_pipeline_name_is_clipped_not_costing_other_columns(
    runner: CliRunner, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long pipeline name is clipped to 16 cells rather than pushing other columns out."""
    name = "a_pipeline_with_a_very_long_name_that_goes_on_and_on"
    config = tmp_path / "capstone.toml"
    config.write_text(f"[pipelines.{name}]\n")
    path = tmp_path / "in.jsonl"
    path.write_text('{"key": "a", "name": "n", "value": 1, "ts": "2025-01-01T00:00:00"}\n')
    result = runner.invoke(
        app, ["run", "-p", name, "--config", str(config), "-i", str(path), "--db", db, "-q"]
    )
    assert result.exit_code == 0, result.output
    _narrow(monkeypatch, 130)
    result = runner.invoke(app, ["runs", "--db", db])
    header = next(line for line in result.stdout.splitlines() if "status" in line)
    for column in ("pipeline", "started (UTC)", "staged", "stale", "watermark"):
        assert column in header
    assert "a_pipeline_with" in result.stdout
    assert name not in result.stdout


def test_stored_text_is_shown_as_text_not_obeyed(
    runner: CliRunner, db: str, write_jsonl: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys and payloads that look like Rich markup are printed as they are, and an escape
    character from the input reaches the terminal as `\\x1b`, not as a colour change."""
    bad = {"key": "k2[/]", "name": "[bold red]x", "value": "nope", "ts": "2025-01-01T00:00:00"}
    path = write_jsonl([bad, '{"key": "\u001b[31mk", "name": "n", "value": "x", "ts": 1}'])
    run(path, db)
    _narrow(monkeypatch, 200)
    result = runner.invoke(app, ["dead-letters", "--db", db])
    assert result.exit_code == 0, result.output
    assert "k2[/]" in result.stdout
    assert '"name":"[bold red]x"' in result.stdout
    assert "\\x1b[31mk" in result.stdout
    assert "\x1b" not in result.stdout
    lineage = runner.invoke(app, ["lineage", "k2[/]", "--db", db])
    assert lineage.exit_code == 0, lineage.output
    assert "lineage of key 'k2[/]'" in lineage.stdout


def test_clipping_counts_screen_cells() -> None:
    """Wide characters take two cells: clipping keeps within the width and marks the cut."""
    from rich.cells import cell_len

    from capstone.cli.render import _clip

    assert _clip("データファイル.jsonl", 12, left=True) == "…イル.jsonl"
    assert cell_len(_clip("データファイル.jsonl", 12, left=True)) <= 12
    assert _clip("データファイル", 7) == "データ…"
    assert _clip("short", 10) == "short"


def test_a_column_left_out_comes_back_when_a_wider_one_goes() -> None:
    """Columns go least wanted first; once a wide one has gone too, those dropped before it
    that fit again come back."""
    from rich.console import Console
    from rich.text import Text

    from capstone.cli.render import _Column, _fitted

    columns = [_Column("id"), _Column("small", drop=2), _Column("wide", drop=1)]
    rows = [[Text("1"), Text("s"), Text("w" * 40)]]
    console = Console(width=30, record=True)
    console.print(_fitted("t", columns, rows, 30))
    text = console.export_text()
    assert "small" in text
    assert "wide" in text.split("not shown")[1]


def test_help_keeps_text_in_brackets(runner: CliRunner) -> None:
    """Rich reads [text] in help as markup and drops it; defaults are written in parentheses."""
    result = runner.invoke(app, ["run", "--help"])
    assert "./capstone.toml when present" in " ".join(result.stdout.split())


def test_dead_letters_of_several_pipelines_name_theirs(
    runner: CliRunner, db: str, sample: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The list covers every pipeline, so it shows whose each letter is once there are two."""
    run(sample, db)
    config = tmp_path / "capstone.toml"
    config.write_text("[pipelines.other]\n")
    runner.invoke(app, ["run", "-p", "other", "--config", str(config), "-i", sample, "--db", db])
    _narrow(monkeypatch, 160)
    result = runner.invoke(app, ["dead-letters", "--db", db])
    header = next(line for line in result.stdout.splitlines() if "reason" in line)
    assert "pipeline" in header
    assert "other" in result.stdout


def test_a_newline_in_a_key_is_shown_not_obeyed(
    runner: CliRunner, db: str, write_jsonl: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key with a newline or a right-to-left override stays on its row, escaped; an error line
    quoting the input stays one line without terminal escapes."""
    run(write_jsonl([{"key": "a\nb\u202ec", "name": "n", "value": "x", "ts": "2025-01-01"}]), db)
    _narrow(monkeypatch, 160)
    result = runner.invoke(app, ["dead-letters", "--db", db])
    assert "a\\x0ab\\u202ec" in result.stdout
    missing = runner.invoke(app, ["run", "--input", "in\x1b[31mred", "--db", db])
    # `[` makes the value a glob (which matched nothing); the line quotes it, escaped.
    assert missing.stderr.startswith("capstone: error: --input 'in\\x1b[31mred' matches no file")
    assert missing.stderr.count("\n") == 1
