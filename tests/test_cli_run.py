"""`capstone run` through the CLI: output modes, the --output file, exit codes and error lines."""

import bz2
import gzip
import json
import lzma
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from capstone import cli
from capstone.classify import Classifier
from capstone.cli import app
from tests.conftest import fetch

SEED_COUNTS = {
    "input_records": 7,
    "staged": 5,
    "loaded": 5,
    "rejected": 2,
    "dead_letters": 2,
    "lineage_entries": 12,
    "watermark": "2025-01-15T12:00:00",
}


def invoke(runner: CliRunner, *args: str) -> Any:
    return runner.invoke(app, list(args))


def test_json_summary_matches_the_seed_and_is_written_to_output(
    runner: CliRunner, db: str, sample: str, tmp_path: Path
) -> None:
    """--json prints the seed's summary and --output holds it plus the run log."""
    output = tmp_path / "summary.json"
    result = invoke(runner, "run", "--input", sample, "--db", db, "--output", str(output), "--json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert {k: printed[k] for k in SEED_COUNTS} == SEED_COUNTS
    written = json.loads(output.read_text())
    assert {k: written[k] for k in SEED_COUNTS} == SEED_COUNTS
    assert [run["run_id"] for run in written["run_log"]] == [printed["run_id"]]


def test_default_output_is_a_table(runner: CliRunner, db: str, sample: str) -> None:
    """Without --json the summary is a Rich table."""
    result = invoke(runner, "run", "--input", sample, "--db", db)
    assert result.exit_code == 0, result.output
    assert "input_records" in result.stdout
    assert "2025-01-15T12:00:00" in result.stdout


def test_report_flag_adds_lineage_by_step(runner: CliRunner, db: str, sample: str) -> None:
    """--report --json adds the run's lineage counts per step."""
    result = invoke(runner, "run", "--input", sample, "--db", db, "--report", "--json")
    steps = {"stage": 5, "load": 5, "stale": 0, "reject": 2, "skip": 0}
    assert json.loads(result.stdout)["by_step"] == steps


def test_output_is_checked_before_the_run(runner: CliRunner, tmp_path: Path, sample: str) -> None:
    """An --output the run could not write is a usage error before anything is loaded."""
    db = tmp_path / "c.db"
    missing = tmp_path / "nope" / "summary.json"
    result = invoke(runner, "run", "--input", sample, "--db", str(db), "--output", str(missing))
    assert result.exit_code == 2
    assert "which is not a writable folder" in result.stderr
    assert not db.exists()


def test_output_never_overwrites_the_database_or_the_input(
    runner: CliRunner, tmp_path: Path, sample: str
) -> None:
    """--output naming the database (or its WAL) or the input file is refused up front, for
    `run` and for `dead-letters export`; the database keeps working."""
    db = str(tmp_path / "c.db")
    assert invoke(runner, "run", "--input", sample, "--db", db, "-q").exit_code == 0
    for output, what in (
        (db, "the database"),
        (db + "-wal", "the database"),
        (sample, "the input"),
    ):
        result = invoke(runner, "run", "--input", sample, "--db", db, "--output", output)
        assert result.exit_code == 2
        assert f"would overwrite {what}" in result.stderr
    export = invoke(runner, "dead-letters", "export", "--db", db, "--output", db)
    assert export.exit_code == 2
    assert fetch(db, "SELECT COUNT(*) FROM run_log") == [(1,)]


def test_output_dash_writes_the_document_to_stdout(runner: CliRunner, db: str, sample: str) -> None:
    """--output - puts the summary and run log on stdout, in place of the table."""
    result = invoke(runner, "run", "--input", sample, "--db", db, "--output", "-")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert (document["staged"], len(document["run_log"])) == (5, 1)


def test_a_signal_after_the_commit_says_the_run_is_kept(
    runner: CliRunner, db: str, sample: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the summary is printed: exit 130, and the message says run 1 committed."""

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.run, "_show_run", interrupted)
    result = invoke(runner, "run", "--input", sample, "--db", db)
    assert result.exit_code == 130
    assert "interrupted after run 1 committed; its results are kept" in result.stderr
    replayed = invoke(runner, "replay", "--db", db)
    assert replayed.exit_code == 130
    assert "interrupted after run 2 committed; its results are kept" in replayed.stderr
    assert fetch(db, "SELECT status FROM run_log ORDER BY run_id") == [("success",)] * 2


def test_quiet_prints_nothing(runner: CliRunner, db: str, sample: str) -> None:
    """--quiet prints nothing on success."""
    result = invoke(runner, "run", "--input", sample, "--db", db, "--quiet")
    assert result.exit_code == 0
    assert result.output == ""


def test_db_comes_from_the_environment(runner: CliRunner, db: str, sample: str) -> None:
    """CAPSTONE_DB selects the database when --db is not given."""
    result = runner.invoke(app, ["run", "--input", sample, "--json"], env={"CAPSTONE_DB": db})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["loaded"] == 5


def test_stdin_is_read_with_dash(runner: CliRunner, db: str, sample: str) -> None:
    """--input - reads standard input."""
    result = runner.invoke(
        app, ["run", "--input", "-", "--db", db, "--json"], input=Path(sample).read_bytes()
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["staged"] == 5


def test_missing_input_is_one_line_and_exit_1(runner: CliRunner, db_path: str) -> None:
    """A missing input file: exit 1, one line naming it, no traceback, no database created."""
    result = invoke(runner, "run", "--input", "nope.json", "--db", db_path)
    assert result.exit_code == 1
    assert (
        result.stderr
        == "capstone: error: input file nope.json does not exist; check the --input path\n"
    )
    assert not Path(db_path).exists()


def test_corrupted_watermark_exits_1_naming_the_fix(
    runner: CliRunner, db: str, sample: str
) -> None:
    """A corrupted watermark: exit 1 with a message naming reset-watermark."""
    from capstone.store import open_store

    store = open_store(db)
    store.set_watermark("events", "yesterday-ish")
    store.close()
    result = invoke(runner, "run", "--input", sample, "--db", db)
    assert result.exit_code == 1
    assert "capstone reset-watermark" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.output


def test_bad_format_and_duration_are_usage_errors(
    runner: CliRunner, db_path: str, sample: str
) -> None:
    """Unusable option values exit 2 with the expected forms in the message."""
    bad_format = invoke(runner, "run", "--input", sample, "--db", db_path, "--format", "xml")
    bad_lookback = invoke(runner, "run", "--input", sample, "--db", db_path, "--lookback", "soon")
    assert (bad_format.exit_code, bad_lookback.exit_code) == (2, 2)
    assert "json, jsonl, csv or parquet" in bad_format.stderr
    assert "90s, 15m" in bad_lookback.stderr


def test_not_a_database_is_a_clear_error(runner: CliRunner, tmp_path: Path, sample: str) -> None:
    """A --db that is not a SQLite file is refused in one line."""
    fake = tmp_path / "fake.db"
    fake.write_bytes(b"this is not sqlite" * 100)
    result = invoke(runner, "run", "--input", sample, "--db", str(fake))
    assert result.exit_code == 1
    assert "is not a SQLite database" in result.stderr


def test_csv_input_loads(runner: CliRunner, db: str, tmp_path: Path) -> None:
    """CSV with a header loads; numeric text becomes the value, extra columns are kept."""
    path = tmp_path / "events.csv"
    path.write_text(
        "key,name,value,ts,region\na,n,1.5,2025-01-01T00:00:00,eu\nb,n,x,2025-01-01T00:00:00,us\n"
    )
    result = invoke(runner, "run", "--input", str(path), "--db", db, "--json")
    summary = json.loads(result.stdout)
    assert (summary["staged"], summary["rejected"]) == (1, 1)


def test_ctrl_c_while_the_cli_starts_is_one_line_and_exit_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An interrupt during the imports before any command runs gives no traceback."""
    import builtins

    from capstone.__main__ import main

    real_import = builtins.__import__

    def interrupted_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "capstone.cli":
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", interrupted_import)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == (
        "capstone: error: interrupted while starting; nothing was changed\n"
    )


def test_ctrl_c_at_a_prompt_is_an_interruption_not_a_no(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Click turns Ctrl-C at a prompt into Abort; it still exits 130, on a line of its own."""
    import typer

    from capstone.__main__ import main

    def ctrl_c_at_the_prompt(**kwargs: Any) -> None:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise typer.Abort from None

    monkeypatch.setattr(cli, "app", ctrl_c_at_the_prompt)
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == (
        "\ncapstone: error: interrupted; `capstone runs` shows the state of every run\n"
    )


def test_importing_capstone_loads_nothing_heavy() -> None:
    """`import capstone` stays light (the CLI entry catches Ctrl-C only after it); names load lazily."""
    code = (
        "import sys, capstone; heavy = {'pydantic', 'typer', 'rich'} & set(sys.modules); "
        "assert not heavy, heavy; from capstone import run, RunOptions; print(run.__module__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "capstone.pipeline"


def test_only_the_cli_package_imports_typer_and_rich() -> None:
    """Every module outside capstone.cli imports without Typer or Rich: the library needs neither."""
    code = (
        "import importlib, pathlib, sys, capstone\n"
        "root = pathlib.Path(capstone.__file__).parent\n"
        "for path in sorted(root.rglob('*.py')):\n"
        "    parts = path.relative_to(root.parent).with_suffix('').parts\n"
        "    if parts[1] != 'cli':\n"
        "        importlib.import_module('.'.join(p for p in parts if p != '__init__'))\n"
        "assert 'capstone.pipeline' in sys.modules\n"
        "heavy = {'typer', 'rich'} & {name.split('.')[0] for name in sys.modules}\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["runs", "--limit", "0"], "Invalid value for '--limit'"),
        (["run", "--bogus"], "No such option: --bogus; see `capstone run --help`"),
        (["nosuchcmd"], "No such command 'nosuchcmd'; see `capstone --help`"),
        (["runs", "--db", "mysql://u@h/d"], "--db mysql:// is not a database capstone can use"),
        (["runs", "--db", ""], "--db '' names no file"),
        (["runs", "--db", ":memory:"], "--db ':memory:' names no file"),
        (["runs", "--limit", str(2**63)], "Invalid value for '--limit'"),
        (["report", "--run", str(-(2**70))], "ids and counts run from 1 to"),
    ],
)
def test_usage_errors_from_the_command_line_are_one_line_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """Click's own usage errors come out as one `capstone: error:` line, not a boxed panel."""
    done = subprocess.run(
        [sys.executable, "-m", "capstone", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("capstone: error: ")
    assert message in done.stderr
    assert done.stderr.count("\n") == 1


def run_with_reader_gone(args: list[str]) -> subprocess.CompletedProcess[str]:
    """`capstone ARGS` with stdout a pipe whose reader left before anything was written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "capstone", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "command",
    [["dead-letters", "--json"], ["dead-letters"], ["dead-letters", "export", "--output", "-"]],
    ids=["json", "table", "export"],
)
def test_a_reader_that_stops_early_ends_the_command_quietly(
    tmp_path: Path, command: list[str]
) -> None:
    """`capstone ... | head` is not a bug: with the pipe's reader gone, JSON, a table (where Rich
    would exit 1) and an export to stdout all end with no message and exit 0."""
    db = str(tmp_path / "c.db")
    big = tmp_path / "big.jsonl"
    # 2,000 dead letters, kept on purpose: a file none of whose records loads fails without it.
    big.write_text("".join(f'{{"key": "k{i}", "ts": "never"}}\n' for i in range(2_000)))
    capstone = [sys.executable, "-m", "capstone"]
    keep = ["--max-rejects", "100%"]
    subprocess.run([*capstone, "run", "-i", str(big), "--db", db, "-q", *keep], check=True)
    limit = ["--limit", "5000"] if len(command) < 3 else []
    done = run_with_reader_gone([*command, "--db", db, *limit])
    assert (done.returncode, done.stderr) == (0, "")


def test_a_failed_run_keeps_exit_1_when_its_reader_has_left(tmp_path: Path) -> None:
    """The failed run's JSON cannot be written to a closed pipe; the run's error still decides
    the exit code and is the one line on stderr."""
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    done = run_with_reader_gone(["run", "-i", str(bad), "--db", str(tmp_path / "c.db"), "--json"])
    assert done.returncode == 1
    assert done.stderr.startswith(f"capstone: error: {bad}: the CSV header (a, b) has no column")
    assert done.stderr.count("\n") == 1


def test_a_failed_run_with_output_dash_and_json_prints_one_document(
    runner: CliRunner, db: str, tmp_path: Path
) -> None:
    """--output - and --json together: the failed run's document once, so it parses."""
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    result = invoke(runner, "run", "--input", str(bad), "--db", db, "--output", "-", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["status"] == "failed"


def test_a_csv_header_without_the_required_columns_refuses_the_file(
    runner: CliRunner, db: str, tmp_path: Path
) -> None:
    """A header that names not all the required fields, from another spelling, would make every
    row a dead letter: the run fails, naming what is missing."""
    path = tmp_path / "misspelt.csv"
    path.write_text("key,nme,value,time\nk1,x,2,2025-01-01T00:00:00\n")
    result = runner.invoke(app, ["run", "--input", str(path), "--db", db])
    assert result.exit_code == 1
    assert "has no column for name, ts, which pipeline 'events' requires" in result.stderr
    assert "the delimiter (',')" in result.stderr
    assert fetch(db, "SELECT COUNT(*) FROM dead_letters") == [(0,)]
    assert fetch(db, "SELECT status FROM run_log") == [("failed",)]


def test_a_file_of_control_bytes_alone_is_refused_as_binary(
    runner: CliRunner, db: str, sample: str, tmp_path: Path
) -> None:
    """A file of NUL and other control bytes, no newline, fails in one line as binary data
    whatever its name says, and the file manifest does not take it in."""
    assert invoke(runner, "run", "--input", sample, "--db", db, "-q").exit_code == 0
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\x00" * 64 + bytes(range(1, 32)))
    result = invoke(runner, "run", "--input", str(path), "--db", db)
    assert result.exit_code == 1
    assert result.stderr == (
        f"capstone: error: {path} looks like binary data (control bytes such as NUL and no text), "
        "not JSON, JSON Lines, CSV or Parquet; check the --input path (capstone reads those "
        "plain or gzip, bzip2, xz or zstd compressed)\n"
    )
    assert fetch(db, "SELECT COUNT(*) FROM files") == [(1,)]


def test_a_failed_run_logs_the_watermark_it_started_from(
    runner: CliRunner, db: str, sample: str, tmp_path: Path
) -> None:
    """A run that fails after reading the watermark logs it as watermark_before (and, as it kept
    nothing, as the watermark after), not null."""
    assert invoke(runner, "run", "--input", sample, "--db", db, "-q").exit_code == 0
    path = tmp_path / "broken.json"
    path.write_text('[{"key": "a"}] {"key": "b"}')
    result = invoke(runner, "run", "--input", str(path), "--db", db)
    assert result.exit_code == 1
    assert result.stderr == (
        f"capstone: error: {path} has text after the closing ']' of its array; remove it or fix "
        "the file\n"
    )
    failed = json.loads(invoke(runner, "runs", "2", "--db", db, "--json").stdout)
    assert (failed["status"], failed["watermark_before"], failed["watermark"]) == (
        "failed",
        "2025-01-15T12:00:00",
        "2025-01-15T12:00:00",
    )


def test_an_interrupted_run_logs_the_watermark_it_started_from(
    runner: CliRunner, db: str, sample: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C mid-run: exit 130, rolled back, and the run log keeps the watermark it started
    from as watermark_before, not null."""
    assert invoke(runner, "run", "--input", sample, "--db", db, "-q").exit_code == 0

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Classifier, "classify", interrupted)
    result = invoke(runner, "run", "--input", sample, "--db", db, "--force")
    assert result.exit_code == 130
    assert result.stderr == (
        "capstone: error: run 2 was interrupted and rolled back; nothing was changed\n"
    )
    stopped = json.loads(invoke(runner, "runs", "2", "--db", db, "--json").stdout)
    assert (stopped["status"], stopped["watermark_before"]) == (
        "interrupted",
        "2025-01-15T12:00:00",
    )


def test_a_failed_run_is_still_described_in_json_and_output(
    runner: CliRunner, db: str, tmp_path: Path
) -> None:
    """Scripts reading --json or --output get the failed run's row (status and error), beside
    the one error line on stderr and exit 1."""
    path = tmp_path / "cut.json"
    path.write_text('[{"key": "a", "name": "n", "value": 1, "ts": "2025-01-01T00:00:00"}, {"k')
    output = tmp_path / "summary.json"
    result = runner.invoke(
        app, ["run", "--input", str(path), "--db", db, "--json", "--output", str(output)]
    )
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    shown = json.loads(result.stdout)
    assert (shown["status"], shown["input_records"]) == ("failed", 0)
    assert "Unterminated string;" in shown["error"]
    written = json.loads(output.read_text())
    assert written["run_id"] == shown["run_id"]
    assert [run["status"] for run in written["run_log"]] == ["failed"]


@pytest.mark.parametrize("compress", [bz2.compress, lzma.compress, gzip.compress])
def test_a_file_cut_off_before_its_first_record_is_a_failed_run(
    runner: CliRunner, db_path: str, tmp_path: Path, compress: Any
) -> None:
    """A compressed file cut off so early that not even its format can be read fails as a run,
    as it would in a folder: one line on stderr, exit 1, its failed row on stdout (--json), in
    --output and in the run log, so a scheduler watching any of them sees it."""
    whole = compress(b'{"key": "a", "name": "n", "value": 1, "ts": "2025-01-01T00:00:00"}\n' * 50)
    cut = tmp_path / "cut.jsonl.x"
    cut.write_bytes(whole[: len(whole) // 3])
    output = tmp_path / "out.json"
    result = invoke(runner, "run", "-i", str(cut), "--db", db_path, "--json", "-o", str(output))
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "cut off" in result.stderr or "not valid" in result.stderr
    assert json.loads(result.stdout)["status"] == "failed"
    assert json.loads(output.read_text())["status"] == "failed"
    assert fetch(db_path, "SELECT status, source FROM run_log") == [("failed", str(cut))]


def test_a_missing_input_is_no_run(runner: CliRunner, db_path: str, tmp_path: Path) -> None:
    """A path that names no file is a mistake in the command, not a failed load: exit 1, one
    line, and no database is created for it."""
    result = invoke(runner, "run", "-i", str(tmp_path / "nothing.jsonl"), "--db", db_path)
    assert result.exit_code == 1
    assert "does not exist" in result.stderr
    assert not Path(db_path).exists()


def test_a_folder_as_db_is_named_as_such(runner: CliRunner, sample: str, tmp_path: Path) -> None:
    """--db naming a folder says so and how to fix it (not that the folder may be missing)."""
    result = invoke(runner, "run", "-i", sample, "--db", str(tmp_path))
    assert result.exit_code == 1
    assert result.stderr == (
        f"capstone: error: database {tmp_path} is a folder; point --db at a file (a new one is "
        "created)\n"
    )


def test_another_apps_database_is_refused_naming_the_fix(
    runner: CliRunner, sample: str, tmp_path: Path
) -> None:
    """A SQLite file of another application, with a table of a name capstone uses, is refused in
    one line naming the table and the fix; the table is left as it was."""
    import sqlite3

    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE target (x)")
    result = invoke(runner, "run", "-i", sample, "--db", str(other))
    assert result.exit_code == 1
    assert result.stderr == (
        f"capstone: error: {other} holds tables capstone did not create (table target already "
        "exists); point --db at a capstone database or a new file\n"
    )
    assert fetch(str(other), "SELECT sql FROM sqlite_master WHERE name = 'target'") == [
        ("CREATE TABLE target (x)",)
    ]


@pytest.mark.parametrize("command", [["run", "-i", "IN"], ["replay"]])
def test_json_with_quiet_is_a_usage_error(
    runner: CliRunner, db_path: str, sample: str, command: list[str]
) -> None:
    """--json asks for the summary on stdout and --quiet for nothing: together they are refused
    (exit 2) before anything loads, instead of printing nothing and exiting 0."""
    args = [sample if arg == "IN" else arg for arg in command]
    result = invoke(runner, *args, "--db", db_path, "--json", "--quiet")
    assert result.exit_code == 2
    assert result.stderr == (
        "capstone: error: --json prints the run's summary and --quiet prints nothing but errors; "
        "drop one (--output FILE writes the JSON whatever stdout shows)\n"
    )
    assert not Path(db_path).exists()
