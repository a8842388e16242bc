"""Dead letters in bulk: dismiss by run, reason or all; replay by run; every letter in --json;
`dead_letters_updated`, the letters a run saw again."""

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from capstone import RunOptions, run
from capstone.cli import app
from tests.conftest import KEEP_REJECTS, fetch, stored_letters

BAD_VALUE = '{"key": "v%d", "name": "n", "value": "one", "ts": "2025-01-01T00:00:00"}'
NO_KEY = '{"name": "n", "value": 1, "ts": "2025-01-01T00:00:00"}'


def two_runs_of_letters(db: str, write_jsonl: Any) -> None:
    """Run 1 writes letters 1-3 (value.float_parsing), run 2 letters 4-5 (1 bad value, 1 no key)."""
    run(write_jsonl([BAD_VALUE % i for i in range(3)]), db)
    run(write_jsonl([BAD_VALUE % 9, NO_KEY]), db)


def dismiss(runner: CliRunner, db: str, *args: str, input: str | None = None) -> Any:
    return runner.invoke(app, ["dead-letters", "dismiss", "--db", db, *args], input=input)


def open_ids(db: str) -> list[int]:
    return [letter.id for letter in stored_letters(db)]


def test_dismiss_by_run_closes_the_letters_that_run_first_wrote(
    runner: CliRunner, db: str, write_jsonl: Any
) -> None:
    """--run 1 --yes dismisses run 1's open letters only, as one logged run."""
    two_runs_of_letters(db, write_jsonl)
    result = dismiss(runner, db, "--run", "1", "--yes")
    assert result.exit_code == 0, result.output
    assert "dismissed 3 dead letters of pipeline events (run 3)" in result.stderr
    assert open_ids(db) == [4, 5]
    assert fetch(db, "SELECT status, source FROM run_log WHERE run_id = 3") == [
        ("success", "dismissal of dead letters (first seen in run 1)")
    ]


def test_dismiss_by_reason_closes_matching_letters(
    runner: CliRunner, db: str, write_jsonl: Any
) -> None:
    """--reason matches a substring of the reason codes, across runs; with --run both apply."""
    two_runs_of_letters(db, write_jsonl)
    both = dismiss(runner, db, "--reason", "float_parsing", "--run", "2", "--yes")
    assert both.exit_code == 0, both.output
    assert open_ids(db) == [1, 2, 3, 5]
    result = dismiss(runner, db, "--reason", "float_parsing", "--yes")
    assert result.exit_code == 0, result.output
    assert open_ids(db) == [5]


def test_dismiss_all_asks_first(runner: CliRunner, db: str, write_jsonl: Any) -> None:
    """--all without --yes asks with the count; `n` changes nothing, `y` dismisses every one."""
    two_runs_of_letters(db, write_jsonl)
    refused = dismiss(runner, db, "--all", input="n\n")
    assert refused.exit_code == 1
    assert "Dismiss 5 open dead letters of pipeline events?" in refused.stderr
    assert open_ids(db) == [1, 2, 3, 4, 5]
    assert fetch(db, "SELECT COUNT(*) FROM run_log") == [(2,)]
    agreed = dismiss(runner, db, "--all", input="y\n")
    assert agreed.exit_code == 0, agreed.output
    assert open_ids(db) == []


def test_dismiss_without_a_selection_is_refused(
    runner: CliRunner, db: str, write_jsonl: Any
) -> None:
    """No --id, --run, --reason or --all: exit 2 naming them; nothing changes."""
    two_runs_of_letters(db, write_jsonl)
    result = dismiss(runner, db)
    assert result.exit_code == 2
    assert "say which dead letters to dismiss: --id ID, --run ID, --reason CODE, or --all" in (
        result.stderr
    )
    assert len(open_ids(db)) == 5


def test_dismiss_of_an_empty_selection_says_so_and_logs_no_run(
    runner: CliRunner, db: str, write_jsonl: Any
) -> None:
    """A filter that matches no open letter fails with one line, before any run is logged."""
    two_runs_of_letters(db, write_jsonl)
    result = dismiss(runner, db, "--reason", "missing", "--run", "1", "--yes")
    assert result.exit_code == 1
    assert (
        "no open dead letters of pipeline events with a reason containing 'missing' first seen "
        "in run 1; nothing to dismiss"
    ) in result.stderr
    assert fetch(db, "SELECT COUNT(*) FROM run_log") == [(2,)]


def test_dismiss_id_with_a_filter_is_refused(runner: CliRunner, db: str, write_jsonl: Any) -> None:
    """--id names letters one by one; mixed with --all it is a usage error."""
    two_runs_of_letters(db, write_jsonl)
    result = dismiss(runner, db, "--id", "1", "--all")
    assert result.exit_code == 2
    assert "leave out --run, --reason and --all" in result.stderr


def test_replay_by_run_replays_only_that_runs_letters(
    runner: CliRunner, db: str, write_jsonl: Any
) -> None:
    """capstone replay --run 2 re-validates the letters run 2 first wrote."""
    two_runs_of_letters(db, write_jsonl)
    result = runner.invoke(app, ["replay", "--run", "2", "--db", db, "--json"])
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)
    assert (summary["input_records"], summary["rejected"]) == (2, 2)
    times = {letter.id: letter.times_seen for letter in stored_letters(db)}
    assert times == {1: 1, 2: 1, 3: 1, 4: 2, 5: 2}


def test_replay_by_a_run_without_open_letters_says_so(
    runner: CliRunner, db: str, write_jsonl: Any
) -> None:
    """--run of a run whose letters are all closed replays nothing and says why."""
    two_runs_of_letters(db, write_jsonl)
    dismiss(runner, db, "--run", "1", "--yes")
    result = runner.invoke(app, ["replay", "--run", "1", "--db", db])
    assert result.exit_code == 0, result.output
    assert "no open dead letters of pipeline events were first seen in run 1" in result.stderr


def test_json_without_limit_lists_every_letter(
    runner: CliRunner, db: str, write_jsonl: Any
) -> None:
    """--json has no default limit (the table shows 50); --limit N still bounds it."""
    run(write_jsonl([BAD_VALUE % i for i in range(60)]), db, KEEP_REJECTS)
    every = runner.invoke(app, ["dead-letters", "--db", db, "--json"])
    assert every.exit_code == 0, every.output
    letters = orjson.loads(every.stdout)
    assert [letter["id"] for letter in letters] == list(range(1, 61))
    assert every.stderr == ""
    five = runner.invoke(app, ["dead-letters", "--db", db, "--json", "--limit", "5"])
    assert len(orjson.loads(five.stdout)) == 5
    none = runner.invoke(app, ["dead-letters", "--db", db, "--json", "--reason", "nothing"])
    assert orjson.loads(none.stdout) == []


def test_json_streams_in_the_layout_of_the_other_commands(
    runner: CliRunner, db: str, sample: str
) -> None:
    """The streamed array is laid out as every other --json output (indented by 2)."""
    run(sample, db)
    result = runner.invoke(app, ["dead-letters", "--db", db, "--json"])
    letters = orjson.loads(result.stdout)
    assert result.stdout == orjson.dumps(letters, option=orjson.OPT_INDENT_2).decode() + "\n"


def test_limit_zero_means_no_limit(runner: CliRunner, db: str, write_jsonl: Any) -> None:
    """--limit 0 shows every letter in the table, without the 'showing the first' note."""
    run(write_jsonl([BAD_VALUE % i for i in range(60)]), db, KEEP_REJECTS)
    capped = runner.invoke(app, ["dead-letters", "--db", db])
    assert "showing the first 50" in capped.stderr
    every = runner.invoke(app, ["dead-letters", "--db", db, "--limit", "0"])
    assert every.exit_code == 0, every.output
    assert "showing the first" not in every.stderr
    assert "│ 60 │" in every.stdout


def test_a_replay_that_rejects_again_counts_the_letters_updated(
    runner: CliRunner, db: str, sample: str
) -> None:
    """dead_letters counts new letters, dead_letters_updated the letters seen again: in the
    summary (table and JSON) and in the run log."""
    run(sample, db)
    result = runner.invoke(app, ["replay", "--db", db, "--json"])
    summary = orjson.loads(result.stdout)
    assert (summary["rejected"], summary["dead_letters"], summary["dead_letters_updated"]) == (
        2,
        0,
        2,
    )
    logged = orjson.loads(runner.invoke(app, ["runs", "2", "--db", db, "--json"]).stdout)
    assert logged["dead_letters_updated"] == 2
    table = runner.invoke(app, ["replay", "--db", db])
    assert "dead_letters_updated" in table.stdout


def test_a_first_run_updates_no_letters(db: str, sample: str) -> None:
    """A run whose bad records are all new reports them as new letters, none updated."""
    summary = run(sample, db)
    assert (summary.dead_letters, summary.dead_letters_updated) == (2, 0)


def test_a_letter_seen_in_many_batches_counts_once(db: str, write_jsonl: Any) -> None:
    """A bad record an earlier run rejected, sent again three times in batches of one, updates
    one letter: counted once, its sightings three more."""
    run(write_jsonl([BAD_VALUE % 1]), db)
    again = run(
        write_jsonl([BAD_VALUE % 1, BAD_VALUE % 1, BAD_VALUE % 2, BAD_VALUE % 1]),
        db,
        RunOptions(batch_size=1),
    )
    assert (again.dead_letters, again.dead_letters_updated) == (1, 1)
    assert {letter.id: letter.times_seen for letter in stored_letters(db)} == {1: 4, 2: 1}


def test_stream_json_writes_each_item_before_reading_the_next(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The JSON array is written as the items come: the first is out before the second is read."""
    from capstone.cli._output import stream_json

    def items() -> Iterator[dict[str, int]]:
        yield {"id": 1}
        assert '"id": 1' in capsys.readouterr().out  # already written, and taken here
        yield {"id": 2}

    stream_json(items())
    assert capsys.readouterr().out == ',\n  {\n    "id": 2\n  }\n]\n'
