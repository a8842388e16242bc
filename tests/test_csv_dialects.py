"""CSV dialects: a delimiter per pipeline or per run (tab for .tsv), decimal commas, and a header
check that refuses a file split by the wrong delimiter before any row becomes a dead letter."""

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from capstone import RunOptions, run
from capstone.cli import app
from capstone.errors import ConfigError, InputError
from capstone.pipeline import run_many
from capstone.spec import PipelineSpec, parse_delimiter
from tests.conftest import fetch

FIELDS = {
    "key": {"type": "string"},
    "name": {"type": "string"},
    "value": {"type": "float"},
    "ts": {"type": "timestamp"},
}
EURO_ROWS = [
    "key;name;value;ts",
    "k1;a;3,14;2025-01-01T00:00:00",
    'k2;b;"1,5";2025-01-01T00:00:01',
    "k3;c;-0,25;2025-01-01T00:00:02",
]


def euro(**settings: object) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {"name": "euro", "key": "key", "event_time": "ts", "fields": FIELDS, **settings}
    )


def write(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_semicolon_csv_with_decimal_commas_loads_with_the_settings(
    db: str, tmp_path: Path
) -> None:
    """delimiter = ";" and decimal = "," read a spreadsheet export as it was meant."""
    path = write(tmp_path / "export.csv", EURO_ROWS)
    summary = run(path, db, spec=euro(delimiter=";", decimal=","))
    assert (summary.status, summary.loaded, summary.rejected) == ("success", 3, 0)
    assert fetch(db, "SELECT key, value FROM euro ORDER BY key") == [
        ("k1", 3.14),
        ("k2", 1.5),
        ("k3", -0.25),
    ]


def test_without_the_delimiter_the_file_fails_naming_the_one_to_use(
    db: str, tmp_path: Path
) -> None:
    """The header is checked before any row: the run fails, nothing is dead-lettered, and the
    line names the delimiter that splits the header into the pipeline's columns."""
    path = write(tmp_path / "export.csv", EURO_ROWS)
    with pytest.raises(InputError) as caught:
        run(path, db, spec=euro(decimal=","))
    assert str(caught.value) == (
        f"{path}: the CSV header splits into 1 column with ',' but into 4 columns with ';'; "
        "use --delimiter ';' or set delimiter = \";\" for pipeline 'euro'"
    )
    assert fetch(db, "SELECT COUNT(*) FROM dead_letters") == [(0,)]
    assert fetch(db, "SELECT status FROM run_log") == [("failed",)]


def test_rows_of_wrong_width_do_not_hide_a_wrong_delimiter(db: str, tmp_path: Path) -> None:
    """Every row of a semicolon file is one cell wide; the header check still runs (it used to
    look only at rows that parsed, and let 50 of 50 rows become dead letters with success)."""
    lines = ["key;name;value;ts"] + [f"k{i};a,b;1,5;2025-01-01T00:00:00" for i in range(50)]
    path = write(tmp_path / "export.csv", lines)
    with pytest.raises(InputError, match="use --delimiter ';'"):
        run(path, db)
    assert fetch(db, "SELECT COUNT(*) FROM dead_letters") == [(0,)]


def test_decimal_commas_without_the_setting_are_rejected_not_misread(
    db: str, tmp_path: Path
) -> None:
    """Without decimal = ",", "3,14" is no number: a dead letter, never 314 or 3."""
    path = write(tmp_path / "export.csv", EURO_ROWS[:2])
    summary = run(path, db, spec=euro(delimiter=";"))
    assert (summary.loaded, summary.rejected) == (0, 1)
    assert fetch(db, "SELECT reason FROM dead_letters") == [("value.float_parsing",)]


def test_with_decimal_commas_a_point_is_a_reject_not_a_fraction(db: str, tmp_path: Path) -> None:
    """Where the comma is the decimal mark a point groups thousands: "1.234" is refused rather
    than loaded as 1.234 (or guessed as 1234)."""
    path = write(tmp_path / "export.csv", ["key;name;value;ts", "k1;a;1.234;2025-01-01T00:00:00"])
    summary = run(path, db, spec=euro(delimiter=";", decimal=","))
    assert (summary.loaded, summary.rejected) == (0, 1)
    assert fetch(db, "SELECT reason, raw FROM dead_letters") == [
        ("value.float_parsing", "k1;a;1.234;2025-01-01T00:00:00")
    ]


def test_a_tsv_name_is_read_with_tabs(db: str, tmp_path: Path) -> None:
    """x.tsv, and x.tsv.gz, are tab-separated without a setting."""
    lines = ["key\tname\tvalue\tts", "k1\ta, b\t2.5\t2025-01-01T00:00:00"]
    plain = write(tmp_path / "events.tsv", lines)
    packed = tmp_path / "more.tsv.gz"
    packed.write_bytes(
        gzip.compress(("\n".join([lines[0], lines[1].replace("k1", "k2")]) + "\n").encode())
    )
    assert run(plain, db).loaded == 1
    assert run(str(packed), db).loaded == 1
    assert fetch(db, "SELECT key, name FROM target ORDER BY key") == [
        ("k1", "a, b"),
        ("k2", "a, b"),
    ]


def test_the_run_option_overrides_the_pipeline(db: str, tmp_path: Path) -> None:
    """RunOptions(delimiter=...) (the CLI's --delimiter) wins over the pipeline's setting."""
    path = write(tmp_path / "pipes.txt", ["key|name|value|ts", "k1|a|2.5|2025-01-01T00:00:00"])
    summary = run(path, db, RunOptions(delimiter="|", format="csv"), spec=euro(delimiter=";"))
    assert (summary.loaded, summary.rejected) == (1, 0)


def test_the_cli_takes_delimiter_tab(runner: CliRunner, db: str, tmp_path: Path) -> None:
    """--delimiter tab loads a tab-separated file whatever its name."""
    path = write(tmp_path / "events.csv", ["key\tname\tvalue\tts", "k1\ta\t2\t2025-01-01T00:00:00"])
    result = runner.invoke(
        app, ["run", "--input", path, "--db", db, "--delimiter", "tab", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["loaded"] == 1


def test_the_cli_refuses_a_wrong_delimiter_file_with_exit_1(
    runner: CliRunner, db: str, tmp_path: Path
) -> None:
    """One line on stderr naming the delimiter to use, exit 1, a failed run logged. The built-in
    pipeline takes no settings from capstone.toml, so the option is the only fix named."""
    path = write(tmp_path / "export.csv", EURO_ROWS)
    result = runner.invoke(app, ["run", "--input", path, "--db", db])
    assert result.exit_code == 1
    assert result.stderr == (
        f"capstone: error: {path}: the CSV header splits into 1 column with ',' but into 4 "
        "columns with ';'; use --delimiter ';'\n"
    )


@pytest.mark.parametrize(
    ("name", "lines", "what"),
    [
        ("events.jsonl", ['{"key": "k1", "ts": "2025-01-01T00:00:00"}'], "JSON Lines"),
        ("events.json", ['[{"key": "k1", "ts": "2025-01-01T00:00:00"}]'], "a JSON array"),
    ],
)
def test_the_cli_refuses_a_delimiter_for_a_file_that_is_not_csv(
    runner: CliRunner, db: str, tmp_path: Path, name: str, lines: list[str], what: str
) -> None:
    """--delimiter for one JSON file would be ignored: a usage error (exit 2) naming the file's
    format and the fix, before anything is read into the database."""
    path = write(tmp_path / name, lines)
    result = runner.invoke(app, ["run", "--input", path, "--db", db, "--delimiter", ";"])
    assert result.exit_code == 2
    assert result.stderr == (
        f"capstone: error: --delimiter applies to CSV, and {path} is {what}; drop --delimiter, "
        "or add --format csv if the file is CSV\n"
    )
    assert not Path(db).exists()


def test_a_delimiter_for_a_feed_applies_to_its_csv_files(db: str, tmp_path: Path) -> None:
    """In a folder of CSV and JSON Lines files, the delimiter is for the CSV ones; the JSON
    Lines file loads as it is."""
    write(tmp_path / "a.csv", EURO_ROWS[:2])
    write(
        tmp_path / "b.jsonl",
        ['{"key": "k9", "name": "n", "value": 1, "ts": "2025-01-02T00:00:00"}'],
    )
    feed = run_many([str(tmp_path)], db, RunOptions(delimiter=";"), spec=euro(decimal=","))
    assert [(r.loaded, r.rejected) for r in feed.runs] == [(1, 0), (1, 0)]


def test_a_header_alone_with_the_wrong_delimiter_is_refused_naming_it(
    runner: CliRunner, db: str, tmp_path: Path
) -> None:
    """A CSV of its header alone, no row and no newline, split by ';' where ',' is expected,
    fails with exit 1 naming the delimiter to use; it does not load as an empty file."""
    path = tmp_path / "header.csv"
    path.write_text("key;ts;value;name")
    result = runner.invoke(app, ["run", "--input", str(path), "--db", db])
    assert result.exit_code == 1
    assert result.stderr == (
        f"capstone: error: {path}: the CSV header splits into 1 column with ',' but into 4 "
        "columns with ';'; use --delimiter ';'\n"
    )


def test_a_header_of_other_names_says_which_delimiter_splits_it(
    runner: CliRunner, db: str, tmp_path: Path
) -> None:
    """A one-column header that no delimiter turns into the pipeline's columns (a key spelt
    `id`) still names the delimiter that splits it, beside the columns missing."""
    path = tmp_path / "header.csv"
    path.write_text("id;ts;value;name")
    result = runner.invoke(app, ["run", "--input", str(path), "--db", db])
    assert result.exit_code == 1
    assert result.stderr == (
        f"capstone: error: {path}: the CSV header (id;ts;value;name) has no column for key, "
        "name, value, ts, which pipeline 'events' requires, so every row would be rejected; "
        "check the header's names (case counts) and the delimiter (','; ';' splits it into 4 "
        "columns)\n"
    )


@pytest.mark.parametrize("value", ["ab", "a", "1", '"', " ", ""])
def test_a_delimiter_that_cannot_be_one_is_refused(value: str) -> None:
    """One character, not a letter, digit, quote, space or line break; as a setting or option."""
    with pytest.raises(ConfigError, match="--delimiter"):
        parse_delimiter(value)
    with pytest.raises(ValueError, match="must be one character"):
        euro(delimiter=value)


def test_the_config_file_takes_tab_as_a_delimiter(tmp_path: Path) -> None:
    """In capstone.toml "\\t" and "tab" both mean a tab; neither setting changes the table."""
    assert euro(delimiter="tab").delimiter == "\t"
    assert euro(delimiter="\t").delimiter == "\t"
    assert euro(delimiter=";", decimal=",").definition() == euro().definition()
