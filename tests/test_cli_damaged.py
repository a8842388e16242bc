"""A database edited by hand or damaged: every command that reads the row fails in one line
naming the table, the row and the fix, never as "a bug"."""

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


def _first_letter(db: str) -> int:
    [(letter,)] = fetch(db, "SELECT MIN(id) FROM dead_letters")
    return int(letter)


@pytest.mark.parametrize("args", LETTER_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("damage", ["'[1]'", "'\"text\"'"])
def test_a_letter_whose_record_is_json_of_another_shape_is_named(
    runner: CliRunner, db: str, sample: str, args: list[str], damage: str
) -> None:
    """A record column holding JSON that is no object (possible on both backends) is named."""
    run(sample, db)
    letter = _first_letter(db)
    change(db, f"UPDATE dead_letters SET record = {damage} WHERE id = {letter}")
    args = [str(letter) if a == "1" else a for a in args]
    _fails_clearly(runner, args, db, "dead_letters", f"id = {letter}")


@pytest.mark.parametrize("args", LETTER_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("damage", ["record = '{broken'", "raw = x'ff00ff'"])
def test_a_letter_sqlite_lets_a_person_break_is_named(
    runner: CliRunner, db_path: str, sample: str, args: list[str], damage: str
) -> None:
    """SQLite takes text that is not JSON, and bytes that are not UTF-8, into any column."""
    run(sample, db_path)
    change(db_path, f"UPDATE dead_letters SET {damage} WHERE id = 1")
    _fails_clearly(runner, args, db_path, "dead_letters", "id = 1")


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
    """`update lineage set position = 'abc'` gives one line naming the lineage row."""
    run(sample, db_path)
    [(row,)] = fetch(db_path, "SELECT MIN(id) FROM lineage WHERE key = 'evt-001'")
    change(db_path, f"UPDATE lineage SET position = 'abc' WHERE id = {row}")
    _fails_clearly(runner, ["lineage", "evt-001"], db_path, "lineage", f"id = {row}")


def test_the_fix_the_message_names_works(runner: CliRunner, db: str, sample: str) -> None:
    """Correcting the named column brings the command back."""
    run(sample, db)
    letter = _first_letter(db)
    change(db, f"UPDATE dead_letters SET record = '[1]' WHERE id = {letter}")
    assert runner.invoke(app, ["dead-letters", "--db", db]).exit_code == 1
    change(db, f"UPDATE dead_letters SET record = NULL WHERE id = {letter}")
    result = runner.invoke(app, ["dead-letters", "--db", db])
    assert result.exit_code == 0, result.output
    assert "(2 shown)" in result.stdout
