"""No command prints a password from --db or CAPSTONE_DB, whatever shape the value has."""

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from capstone.cli import app

SECRET = "Hunter2-Zq9x"

ARGUMENTS: dict[str, list[str]] = {
    "run": ["run", "--input", "-"],
    "report": ["report"],
    "runs": ["runs"],
    "replay": ["replay"],
    "lineage": ["lineage", "k1"],
    "reset-watermark": ["reset-watermark"],
    "prune": ["prune", "--before", "90d", "--yes"],
    "pipelines": ["pipelines"],
    "dead-letters": ["dead-letters"],
    "dead-letters export": ["dead-letters", "export", "--output", "-"],
    "dead-letters dismiss": ["dead-letters", "dismiss", "--id", "1"],
    "files": ["files"],
    "watch": ["watch", "."],
}
"""Every command that takes --db, with the arguments it needs besides."""

BAD_URLS = {
    "password parameter, unparsable host": f"postgresql://u@[::1/db?password={SECRET}",
    "user part, unparsable host": f"postgresql://u:{SECRET}@[::1/db",
    "percent-encoded parameter": f"postgresql://u@[::1/db?password={SECRET}%21",
}


def _commands_with_db(command: Any, prefix: str = "") -> set[str]:
    found = {prefix.strip()} if any(p.name == "db" for p in command.params) else set()
    for name, sub in getattr(command, "commands", {}).items():
        found |= _commands_with_db(sub, f"{prefix}{name} ")
    return found


def test_every_command_with_db_is_covered() -> None:
    """The commands below are all the commands that take --db."""
    assert _commands_with_db(typer.main.get_command(app)) == set(ARGUMENTS)


def _invoke(runner: CliRunner, command: str, db: str, how: str) -> tuple[int, str]:
    args = ARGUMENTS[command]
    if how == "option":
        result = runner.invoke(app, [*args, "--db", db], input="")
    else:
        result = runner.invoke(app, args, input="", env={"CAPSTONE_DB": db})
    return result.exit_code, result.output


@pytest.mark.parametrize("how", ["option", "env"])
@pytest.mark.parametrize("command", sorted(ARGUMENTS))
@pytest.mark.parametrize("url", list(BAD_URLS.values()), ids=list(BAD_URLS))
def test_a_url_that_does_not_parse_never_shows_its_password(
    runner: CliRunner, command: str, how: str, url: str
) -> None:
    """libpq's parse error quotes the URL; the line printed hides the password."""
    code, output = _invoke(runner, command, url, how)
    assert code == 1, output
    assert "not a valid PostgreSQL URL" in output
    assert SECRET not in output
    assert "password=***" in output or "u:***@" in output


@pytest.mark.parametrize("how", ["option", "env"])
@pytest.mark.parametrize("command", sorted(ARGUMENTS))
def test_a_keyword_value_string_is_refused_without_echoing_it(
    runner: CliRunner, command: str, how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`host=... password=...` is refused as a usage error naming the URL form; no file made."""
    monkeypatch.chdir(tmp_path)
    code, output = _invoke(runner, command, f"host=localhost password={SECRET} dbname=x", how)
    assert code == 2, output
    assert "libpq keyword/value string" in output
    assert "postgresql://" in output
    assert SECRET not in output
    assert list(tmp_path.iterdir()) == []
