"""A database edited by hand or damaged: every command that reads the row fails in one line
naming the table, the row and the fix, never as "a bug"."""

import json

import pytest
from typer.testing import CliRunner

from capstone import run
from capstone.cli import app
from tests.conftest import change, fetch

LETTER_COMMANDS = [
    ["dead-letters"],
    ["dead-letters", "--json"],
    ["dead-letters", "export", "--output", "-"],
    ["dead-letters", "dismiss", "--id", "1"],
    ["replay"],
]
"""Every command that reads stored dead letters."""


def _fails_clearly(runner: CliRunner, args: list[str], db: str, table: str, where: str) -> None:
    result = runner.invoke(app, [*args, "--db", db])
    assert result.exit_code == 1, result.output
    assert f"the {table} row with {where} cannot be read" in result.stderr
    assert "restore the database from a backup" in result.stderr
    assert "(a bug" not in result.stderr
    assert result.stderr.count("\n") == 1


def _damage_first_letter(db: str, sample: str, damage: str) -> int:
    """Load the sample, set `damage` (a SET clause) on its first dead letter, return the id."""
    run(sample, db)
    [(letter,)] = fetch(db, "SELECT MIN(id) FROM dead_letters")
    change(db, f"UPDATE dead_letters SET {damage} WHERE id = {letter}")
    return int(letter)


SQLITE_ONLY = {"record = '{broken'", "raw = x'ff00ff'"}
"""Damage only SQLite takes: PostgreSQL's jsonb and UTF-8 text refuse it when it is written."""


@pytest.mark.parametrize("args", LETTER_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("damage", ["record = '[1]'", "record = '\"text\"'"])
def test_a_damaged_letter_is_named(
    runner: CliRunner, db: str, sample: str, args: list[str], damage: str
) -> None:
    """A record that is JSON but no object is named, on either backend."""
    _check_letter(runner, db, sample, args, damage)


@pytest.mark.parametrize("args", LETTER_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("damage", sorted(SQLITE_ONLY))
def test_a_letter_damaged_beyond_its_types_is_named(
    runner: CliRunner, db_path: str, sample: str, args: list[str], damage: str
) -> None:
    """A record that is not JSON, or a raw text that is not UTF-8, is named (SQLite, whose
    columns take such damage; PostgreSQL's refuse it when it is written)."""
    _check_letter(runner, db_path, sample, args, damage)


def _check_letter(runner: CliRunner, db: str, sample: str, args: list[str], damage: str) -> None:
    letter = _damage_first_letter(db, sample, damage)
    args = [str(letter) if a == "1" else a for a in args]
    _fails_clearly(runner, args, db, "dead_letters", f"id = {letter}")


@pytest.mark.parametrize("args", [["runs"], ["runs", "1"]], ids=" ".join)
def test_a_run_log_row_with_text_for_a_count_is_named(
    runner: CliRunner, db_path: str, sample: str, args: list[str]
) -> None:
    """`update run_log set input_records = 'x'` gives one line naming run 1."""
    run(sample, db_path)
    change(db_path, "UPDATE run_log SET input_records = 'x'")
    _fails_clearly(runner, args, db_path, "run_log", "run_id = 1")


def test_a_lineage_row_with_text_for_a_position_is_named(
    runner: CliRunner, db_path: str, sample: str
) -> None:
    """`update lineage_records set position = 'abc'` gives one line naming the lineage row
    (as the `lineage` view numbers it: the record's `stage` step, 2n, comes first)."""
    run(sample, db_path)
    [(row,)] = fetch(db_path, "SELECT MIN(id) FROM lineage_records WHERE key = 'evt-001'")
    change(db_path, f"UPDATE lineage_records SET position = 'abc' WHERE id = {row}")
    _fails_clearly(runner, ["lineage", "evt-001"], db_path, "lineage", f"id = {2 * row}")


def test_the_fix_the_message_names_works(runner: CliRunner, db: str, sample: str) -> None:
    """Correcting the named column brings the command back."""
    letter = _damage_first_letter(db, sample, "record = '[1]'")
    assert runner.invoke(app, ["dead-letters", "--db", db]).exit_code == 1
    change(db, f"UPDATE dead_letters SET record = NULL WHERE id = {letter}")
    result = runner.invoke(app, ["dead-letters", "--db", db])
    assert result.exit_code == 0, result.output
    assert "(2 shown)" in result.stdout


@pytest.mark.parametrize("args", [["dead-letters"], ["dead-letters", "--json"]], ids=" ".join)
def test_the_letters_around_a_damaged_one_are_still_shown(
    runner: CliRunner, db: str, sample: str, args: list[str]
) -> None:
    """A report shows the rows it can read, then fails in one line naming the damaged row."""
    letter = _damage_first_letter(db, sample, "record = '[1]'")
    result = runner.invoke(app, [*args, "--db", db])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert f"the dead_letters row with id = {letter} cannot be read" in result.stderr
    assert "evt-005" in result.stdout  # the second letter, still readable
    assert "(1 shown)" in result.stdout or result.stdout.count('"pipeline"') == 1


def test_the_runs_around_a_damaged_one_are_still_listed(
    runner: CliRunner, db_path: str, sample: str
) -> None:
    """`capstone runs` lists the readable runs and names the damaged one (and how many more)."""
    for _ in range(3):
        run(sample, db_path)
    change(db_path, "UPDATE run_log SET input_records = 'x' WHERE run_id IN (1, 2)")
    result = runner.invoke(app, ["runs", "--db", db_path, "--json"])
    assert result.exit_code == 1
    assert [r["run_id"] for r in json.loads(result.stdout)] == [3]
    assert result.stderr.startswith("capstone: error: the run_log row with run_id = 2")
    assert result.stderr.endswith("(1 more row(s) cannot be read either)\n")
