"""Hostile input: a corpus of nasty files and Hypothesis fuzzing of the readers and the validator.

Whatever the input, `capstone run` ends with exit 0 or 1 and no traceback, one error line on
failure, the accounting identity on success, an intact database, no invalid record in the target,
and nothing but a `failed` run row when it fails. Known bugs are strict xfails naming the bug.
"""

import csv
import gzip
import io
import json
import math
import random
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from capstone.cli import app
from capstone.cli.render import visible
from capstone.compression import check_text, detect
from capstone.errors import InputError
from capstone.sources import _csv_header
from capstone.spec import MAX_TEXT_LENGTH
from capstone.store import is_postgres
from capstone.timeutil import format_ts, parse_ts
from tests.conftest import ROOT, fetch

CORPUS = Path(__file__).parent / "corpus"
FILES = sorted(
    p.name
    for p in CORPUS.iterdir()
    if p.is_file() and p.suffix in {".json", ".jsonl", ".csv", ".txt", ".bin"}
)
BOM = b"\xef\xbb\xbf"
WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
"""Unicode's White_Space property: what the validator strips (Python's str.strip also strips \\x1c-\\x1f)."""
INJECTIONS = {
    "'); DROP TABLE target; --",
    '"); DROP TABLE dead_letters; --',
    "' OR '1'='1",
    "1; DELETE FROM run_log WHERE 1=1; --",
    "Robert'); DROP TABLE lineage;--",
    "x' UNION SELECT sql FROM sqlite_master --",
}
STEPS = {
    "stage": "staged",
    "load": "loaded",
    "stale": "stale",
    "reject": "rejected",
    "skip": "skipped",
}
"""Lineage step -> the summary count it must equal."""
TABLES = {
    "run_log",
    "run_steps",
    "run_reasons",
    "watermarks",
    "target",
    "dead_letters",
    "lineage",
    "pipeline_schemas",
    "schema_changes",
}
"""Tables on both backends (staging is temporary: it lives and dies with the run)."""
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Known bugs are strict xfails naming the bug; the corpus tests take them per file name. Fixed so
# far: ijson's multi-line errors, big integers, lone surrogates read as '?', quadratic memory on
# deep nesting (the JSON array reader now keeps exact raw text); deep extras, UTC overflow and
# digits as timestamps (now rejected with a reason); a number cut by the reader's chunk boundary; NUL records on PostgreSQL (now dead-lettered).
INVARIANT_BUGS: dict[str, str] = {}
OUTCOME_BUGS: dict[str, str] = {}


def corpus(bugs: dict[str, str]) -> list[Any]:
    """Every corpus file as a parameter, a strict xfail where `bugs` names its bug."""
    return [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=bugs[name]))
        if name in bugs
        else name
        for name in FILES
    ]


def invoke(runner: CliRunner, path: Path | str, db: str, *extra: str) -> Result:
    return runner.invoke(app, ["run", "--input", str(path), "--db", db, "--json", *extra])


def jsonl_raws(data: bytes) -> list[str]:
    """Each line's raw text as a dead letter keeps it (the reader drops a leading BOM)."""
    data = data.removeprefix(BOM)
    return [line.rstrip(b"\r\n").decode("utf-8", "backslashreplace") for line in data.split(b"\n")]


def is_sqlite(db: str) -> bool:
    return not is_postgres(db)


def stored_raw(text: str, db: str) -> str:
    """A dead letter's raw text as the backend stores it (PostgreSQL writes NUL as \\x00)."""
    return text if is_sqlite(db) else text.replace("\x00", "\\x00")


def as_dict(attributes: str | dict[str, Any]) -> dict[str, Any]:
    """Target attributes: JSON text on SQLite, already a dict from PostgreSQL's jsonb."""
    return attributes if isinstance(attributes, dict) else orjson.loads(attributes)


def ts_text(ts: str | datetime) -> str:
    """A target ts as capstone's canonical text (PostgreSQL returns a datetime)."""
    return ts if isinstance(ts, str) else format_ts(ts)


def count(db: str, table: str) -> int:
    return int(fetch(db, f"SELECT COUNT(*) FROM {table}")[0][0])


def assert_valid_target(db: str) -> None:
    """Every target row is a valid event: trimmed non-blank key and name, finite value, ISO ts."""
    for key, name, value, ts in fetch(db, "SELECT key, name, value, ts FROM target"):
        for text in (key, name):
            assert isinstance(text, str), (key, name)
            assert 0 < len(text) <= MAX_TEXT_LENGTH, (key, name)
            assert text == text.strip(WHITE_SPACE), (key, name)
        assert math.isfinite(float(value)), (key, value)
        assert isinstance(ts, datetime) or format_ts(parse_ts(ts)) == ts, (key, ts)


def assert_success(result: Result, db: str, jsonl: bytes | None) -> dict[str, Any]:
    """Exit 0: the identity holds, every reject is dead-lettered, lineage matches the counts."""
    assert result.stderr == ""
    summary: dict[str, Any] = json.loads(result.stdout)
    assert summary["input_records"] == summary["staged"] + summary["rejected"] + summary["skipped"]
    assert summary["staged"] == summary["loaded"] + summary["stale"]
    steps = dict(fetch(db, "SELECT step, COUNT(*) FROM lineage GROUP BY step"))
    assert {step: steps.get(step, 0) for step in STEPS} == {
        step: summary[field] for step, field in STEPS.items()
    }
    dead = fetch(db, "SELECT raw, reason, message FROM dead_letters")
    assert len(dead) == summary["dead_letters"] <= summary["rejected"]
    assert (len(dead) > 0) == (summary["rejected"] > 0)
    assert all(raw and reason and message for raw, reason, message in dead), dead
    if jsonl is not None:
        raws, lines = {raw for raw, _, _ in dead}, jsonl_raws(jsonl)
        for (position,) in fetch(db, "SELECT position FROM lineage WHERE step = 'reject'"):
            assert stored_raw(lines[position - 1], db) in raws, position
    runs = fetch(db, "SELECT status, input_records FROM run_log")
    assert runs == [("success", summary["input_records"])]
    assert_valid_target(db)
    return summary


def assert_failure(result: Result, db: str) -> None:
    """Exit 1: one error line, and nothing but a failed run row in the database; with --json,
    stdout describes that row (or nothing, when the run never began)."""
    if result.stdout:
        shown = json.loads(result.stdout)
        assert (shown["status"], shown["input_records"]) == ("failed", 0), shown
        assert result.stderr == f"capstone: error: {visible(shown['error'])}\n"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("capstone: error: ")
    if is_sqlite(db) and not Path(db).exists():
        return
    if not is_sqlite(db) and fetch(db, "SELECT to_regclass('run_log') IS NULL") == [(True,)]:
        return  # the input was refused before the database was opened
    written = TABLES - {"run_log"}
    for table in sorted(written):
        assert count(db, table) == 0, table
    runs = fetch(db, "SELECT status, error FROM run_log ORDER BY run_id")
    assert all(status == "failed" and error for status, error in runs), runs


def assert_survives(result: Result, db: str, jsonl: bytes | None = None) -> dict[str, Any] | None:
    """The invariants for any input; returns the summary on exit 0."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert "(a bug:" not in result.stderr, result.stderr  # capstone's label for unexpected errors
    assert result.exit_code in (0, 1), result.output
    if is_sqlite(db) and Path(db).exists():
        assert fetch(db, "PRAGMA integrity_check") == [("ok",)]
    if result.exit_code == 1:
        assert_failure(result, db)
        return None
    return assert_success(result, db, jsonl)


def run_corpus(runner: CliRunner, name: str, db: str) -> tuple[Result, dict[str, Any] | None]:
    path = CORPUS / name
    result = invoke(runner, path, db)
    jsonl = path.read_bytes() if name.endswith(".jsonl") and result.exit_code == 0 else None
    return result, assert_survives(result, db, jsonl)


# -- the corpus ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", corpus(INVARIANT_BUGS))
def test_corpus_file_keeps_the_invariants(runner: CliRunner, db: str, name: str) -> None:
    """A corpus file ends in exit 0 or 1 with the identity, an intact database and a valid target."""
    run_corpus(runner, name, db)


@pytest.mark.parametrize("name", corpus(OUTCOME_BUGS))
def test_corpus_file_has_the_outcome_its_name_promises(
    runner: CliRunner, db: str, name: str
) -> None:
    """load_ loads all, reject_ rejects all, empty_ reads none, fail_ exits 1, ok_ exits 0.
    A reject_ file keeps its records as dead letters on purpose (`--max-rejects 100%`): without
    it, one of 10 or more records fails (`test_a_file_of_only_bad_records_fails_without_a_limit`)."""
    prefix = name.split("_", 1)[0]
    keep = ["--max-rejects", "100%"] if prefix == "reject" else []
    result = invoke(runner, CORPUS / name, db, *keep)
    if name.startswith("load_nul") and not is_sqlite(db):
        pytest.skip(
            "PostgreSQL text cannot hold NUL: test_nul_characters_on_postgresql_are_dead_lettered"
        )
    assert result.exit_code == (1 if prefix == "fail" else 0), result.output
    if prefix == "fail":
        return
    summary = json.loads(result.stdout)
    records, staged, rejected = summary["input_records"], summary["staged"], summary["rejected"]
    expected = {
        "load": records > 0 and staged == records,
        "reject": records > 0 and rejected == records,
        "empty": records == 0,
        "ok": True,
    }
    assert expected[prefix], summary


def test_a_file_of_only_bad_records_fails_without_a_limit(runner: CliRunner, db: str) -> None:
    """reject_impossible_dates.jsonl (10 or more records, each with its key and time, none
    valid) fails with exit 1 when no --max-rejects says to keep them, naming its reasons, and
    leaves no dead letter."""
    result = invoke(runner, CORPUS / "reject_impossible_dates.jsonl", db)
    assert result.exit_code == 1, result.output
    assert "of its records were rejected (ts." in result.stderr
    assert "--max-rejects 100%" in result.stderr
    assert fetch(db, "SELECT COUNT(*) FROM dead_letters") == [(0,)]


def test_corpus_names_promise_an_outcome() -> None:
    """Every corpus file's name starts with a known outcome prefix."""
    assert FILES
    assert {name.split("_", 1)[0] for name in FILES} <= {"load", "reject", "empty", "fail", "ok"}


@pytest.mark.parametrize(
    "name", ["reject_key_100k.jsonl", "reject_key_100k.json", "reject_key_100k.csv"]
)
def test_key_over_the_maximum_length_is_dead_lettered_whole(
    runner: CliRunner, db: str, name: str
) -> None:
    """A 100,000-character key is rejected as too long and its raw text is kept untruncated."""
    assert MAX_TEXT_LENGTH < 100_000
    run_corpus(runner, name, db)
    [(reason, raw)] = fetch(db, "SELECT reason, raw FROM dead_letters")
    assert reason == "key.string_too_long"
    assert "k" * 100_000 in raw


def test_key_at_the_maximum_length_loads(runner: CliRunner, db: str) -> None:
    """Keys of exactly MAX_TEXT_LENGTH characters, after trimming, load whole."""
    run_corpus(runner, "load_key_at_max_length.jsonl", db)
    keys = sorted(key for (key,) in fetch(db, "SELECT key FROM target"))
    assert keys == sorted(["k" * MAX_TEXT_LENGTH, "m" * MAX_TEXT_LENGTH, "n"])


@pytest.mark.parametrize(
    "name", ["load_sql_injection.jsonl", "load_sql_injection.json", "load_sql_injection.csv"]
)
def test_sql_injection_text_is_stored_verbatim_in_the_target(
    runner: CliRunner, db: str, name: str
) -> None:
    """SQL in keys, names, attribute names and values is data: stored as written, never run."""
    run_corpus(runner, name, db)
    rows = fetch(db, "SELECT key, name, attributes FROM target")
    assert {key for key, _, _ in rows} == INJECTIONS
    assert all(key == name for key, name, _ in rows)
    for key, _, attributes in rows:
        assert key in as_dict(attributes).values()
    for table in TABLES:
        count(db, table)  # still there


def test_sql_injection_text_is_stored_verbatim_in_dead_letters(runner: CliRunner, db: str) -> None:
    """Rejected records carrying SQL keep their exact line as the dead letter's raw text."""
    path = CORPUS / "reject_sql_injection.jsonl"
    run_corpus(runner, path.name, db)
    raws = {raw for (raw,) in fetch(db, "SELECT raw FROM dead_letters")}
    assert raws == set(path.read_text(encoding="utf-8").splitlines())


@pytest.mark.parametrize(
    "name", ["load_emoji_rtl.jsonl", "load_emoji_rtl.json", "load_emoji_rtl.csv"]
)
def test_emoji_rtl_and_combining_text_round_trips(runner: CliRunner, db: str, name: str) -> None:
    """Emoji, ZWJ sequences, RTL marks and combining characters come back exactly as sent."""
    run_corpus(runner, name, db)
    sent = {
        orjson.loads(line)["key"]
        for line in (CORPUS / "load_emoji_rtl.jsonl").read_bytes().splitlines()
    }
    assert {key for (key,) in fetch(db, "SELECT key FROM target")} == sent


@pytest.mark.parametrize("name", ["load_nul_escapes.jsonl", "load_nul_bytes.csv"])
def test_nul_characters_are_stored_not_truncated(runner: CliRunner, db: str, name: str) -> None:
    """A NUL inside a key survives storage in SQLite: the key is not cut at it."""
    if not is_sqlite(db):
        pytest.skip("PostgreSQL text cannot hold NUL")
    run_corpus(runner, name, db)
    assert {key for (key,) in fetch(db, "SELECT key FROM target")} == {"a\x00b", "\x00"}


@pytest.mark.parametrize("name", ["load_nul_escapes.jsonl", "load_nul_bytes.csv"])
def test_nul_characters_on_postgresql_are_dead_lettered(
    runner: CliRunner, db: str, name: str
) -> None:
    """PostgreSQL cannot store NUL, so such valid records are rejected with a nul_character reason."""
    if is_sqlite(db):
        pytest.skip("SQLite stores NUL characters")
    run_corpus(runner, name, db)
    reasons = [reason for (reason,) in fetch(db, "SELECT reason FROM dead_letters")]
    assert len(reasons) == 2
    assert all(".nul_character" in reason for reason in reasons), reasons


@pytest.mark.parametrize("name", ["load_bom_crlf.jsonl", "load_bom_crlf.json", "load_bom_crlf.csv"])
def test_bom_and_crlf_leave_no_trace_in_stored_values(
    runner: CliRunner, db: str, name: str
) -> None:
    """A UTF-8 BOM and CRLF line ends do not leak into keys, names or timestamps."""
    run_corpus(runner, name, db)
    rows = {
        (key, name, ts_text(ts)) for key, name, ts in fetch(db, "SELECT key, name, ts FROM target")
    }
    assert rows == {(key, "evt", "2025-01-15T09:00:00") for key in "abc"}


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("reject_nan_infinity.jsonl", "value"),
        ("reject_nan_infinity.csv", "value"),
        ("reject_nan_infinity_text.json", "value"),
        ("reject_impossible_dates.jsonl", "ts"),
        ("reject_impossible_dates.csv", "ts"),
        ("reject_booleans_for_value.jsonl", None),
        ("reject_nested_values.json", None),
        ("reject_numbers_for_strings.jsonl", None),
    ],
)
def test_wrong_field_types_are_rejected_with_a_field_reason(
    runner: CliRunner, db: str, name: str, field: str | None
) -> None:
    """Each rejected record names the failing field (value, ts, ...) or says it is not JSON."""
    run_corpus(runner, name, db)
    fields = {"key", "name", "value", "ts"} if field is None else {field}
    for (reason,) in fetch(db, "SELECT reason FROM dead_letters"):
        for code in reason.split(","):
            assert code == "malformed.json" or code.split(".")[0] in fields, reason


def test_a_number_cut_by_a_read_boundary_is_read_whole(
    runner: CliRunner, db: str, tmp_path: Path
) -> None:
    """A number element straddling byte 4 MiB (a multiple of any power-of-two read size) reads whole."""
    head, tail = '["', '", 1.'
    path = tmp_path / "split.json"
    path.write_text(head + "x" * ((1 << 22) - len(head) - len(tail)) + tail + "5]")
    assert path.read_bytes()[(1 << 22) - 2 : (1 << 22) + 1] == b"1.5"
    result = invoke(runner, path, db)
    summary = assert_survives(result, db)
    assert summary is not None, result.output
    assert summary["input_records"] == summary["rejected"] == 2


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS caps memory only on Linux")
def test_100k_nested_arrays_in_a_json_array_fit_in_memory(tmp_path: Path) -> None:
    """A 200 KB JSON array nesting 100,000 arrays is read within 2 GiB, without a crash."""
    limited = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
        "from capstone.cli import app\n"
        "app(prog_name='capstone')\n"
    )
    path = CORPUS / "isolated" / "ok_deep_nesting_100k.json"
    db = str(tmp_path / "capstone.db")
    command = [sys.executable, "-c", limited, "run", "--input", str(path), "--db", db, "--json"]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, cwd=ROOT, check=False
    )
    assert "Traceback" not in done.stderr
    assert "(a bug:" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr


# -- Hypothesis ---------------------------------------------------------------------------------

TOKENS = [
    "{", "}", "[", "]", ":", ",", '"', "\\", "\n", "\r\n", "\r", " ", "\t", "\ufeff", "\x00",
    '"key"', '"name"', '"value"', '"ts"', '"a"', "1", "-0.5", "1e400", "NaN", "Infinity", "true",
    "null", '"2025-01-15T09:00:00"', '"2025-02-30"', "\\u0000", "\\ud800", "\\\"", "key,name,value,ts",
    "'); DROP TABLE target; --", "😀", "\u202e",
]  # fmt: skip
TEXTS = st.lists(st.one_of(st.text(max_size=6), st.sampled_from(TOKENS)), max_size=60).map("".join)
BYTES = st.lists(
    st.one_of(st.binary(max_size=6), st.sampled_from([t.encode() for t in TOKENS])), max_size=60
).map(b"".join)


def write(tmp_path_factory: pytest.TempPathFactory, data: bytes, suffix: str) -> Path:
    path = tmp_path_factory.mktemp("hostile") / f"input{suffix}"
    path.write_bytes(data)
    return path


def starts_like_binary(data: bytes) -> bool:
    """Whether capstone refuses the content from its first bytes, before reading any line."""
    try:
        check_text(data, "input")
    except InputError:
        return True
    return detect(data) is not None


def assert_jsonl_read_every_line(
    result: Result, summary: dict[str, Any] | None, data: bytes
) -> None:
    """JSON Lines: exit 1 only for a lone '{' or '[' on line 1 (a pretty-printed object or array),
    a CSV header on line 1, or bytes that start like compressed data, a known binary format or
    no text; otherwise one record per non-blank line."""
    lines = data.removeprefix(BOM).split(b"\n")
    if lines[0].strip() in (b"{", b"[") or _csv_header(lines[0]) or starts_like_binary(data):
        assert result.exit_code == 1
        return
    assert summary is not None, result.output
    assert summary["input_records"] == sum(1 for line in lines if line.strip())


@SETTINGS
@given(data=BYTES)
def test_random_bytes_as_json_lines_lose_no_line(
    runner: CliRunner, db_factory: Any, tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    """Random bytes read as JSON Lines keep the invariants and give one record per non-blank line."""
    db = db_factory()
    path = write(tmp_path_factory, data, ".jsonl")
    result = invoke(runner, path, db, "--format", "jsonl")
    summary = assert_survives(result, db, data if result.exit_code == 0 else None)
    assert_jsonl_read_every_line(result, summary, data)


@SETTINGS
@given(text=TEXTS)
def test_random_text_as_json_lines_lose_no_line(
    runner: CliRunner, db_factory: Any, tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    """Random JSON-flavoured text read as JSON Lines keeps the invariants, one record per line."""
    db, data = db_factory(), text.encode("utf-8")
    path = write(tmp_path_factory, data, ".jsonl")
    result = invoke(runner, path, db, "--format", "jsonl")
    summary = assert_survives(result, db, data if result.exit_code == 0 else None)
    assert_jsonl_read_every_line(result, summary, data)


@SETTINGS
@given(data=BYTES)
def test_random_bytes_as_csv_keep_the_invariants(
    runner: CliRunner, db_factory: Any, tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    """Random bytes read as CSV end in exit 0 or 1 with every invariant kept."""
    db = db_factory()
    assert_survives(
        invoke(runner, write(tmp_path_factory, data, ".csv"), db, "--format", "csv"), db
    )


@SETTINGS
@given(text=TEXTS)
def test_random_text_as_csv_keeps_the_invariants(
    runner: CliRunner, db_factory: Any, tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    """Random text after a valid CSV header ends in exit 0 or 1 with every invariant kept."""
    db, data = db_factory(), ("key,name,value,ts\n" + text).encode("utf-8")
    assert_survives(
        invoke(runner, write(tmp_path_factory, data, ".csv"), db, "--format", "csv"), db
    )


OFFSETS = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
TIMESTAMPS = st.one_of(
    st.datetimes(max_value=datetime(2024, 12, 31)).map(datetime.isoformat),
    st.datetimes().map(datetime.isoformat),
    # Aware times stay within 1900-2100: offsets at the calendar's ends are a known bug (TS_OVERFLOW).
    st.datetimes(datetime(1900, 1, 1), datetime(2100, 1, 1), timezones=OFFSETS).map(
        datetime.isoformat
    ),
)
CELLS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(TOKENS),
    TIMESTAMPS,
    st.floats().map(str),
    st.integers().map(str),
)


@SETTINGS
@given(rows=st.lists(st.lists(CELLS, max_size=6), max_size=8))
def test_random_csv_rows_are_each_one_record(
    runner: CliRunner,
    db_factory: Any,
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[list[str]],
) -> None:
    """Well-quoted CSV rows of random cells keep the invariants and each is one record."""
    db, buffer = db_factory(), io.StringIO()
    csv.writer(buffer).writerows([["key", "name", "value", "ts"], *rows])
    data = buffer.getvalue().encode("utf-8")
    result = invoke(runner, write(tmp_path_factory, data, ".csv"), db, "--format", "csv")
    summary = assert_survives(result, db)
    assert summary is not None, result.output
    assert summary["input_records"] == sum(1 for row in rows if row)


INT_MIN, INT_MAX = -(2**63) + 1, 2**63 - 1
"""Wider integers make a JSON array refuse the whole file: a known bug (BIG_INT)."""
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(INT_MIN, INT_MAX),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = {
    "key": st.one_of(st.text(max_size=12), st.text(min_size=250, max_size=260), JSON_VALUES),
    "name": st.one_of(st.text(max_size=12), st.sampled_from(sorted(INJECTIONS)), JSON_VALUES),
    "value": st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.integers(INT_MIN, INT_MAX),
        st.text(max_size=12),
        JSON_VALUES,
    ),
    "ts": st.one_of(TIMESTAMPS, st.text(max_size=25), JSON_VALUES),
}
RECORDS = st.builds(
    lambda extra, fields: {**extra, **fields},
    st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3),
    st.fixed_dictionaries({}, optional=FIELDS),
)
ELEMENTS = st.lists(st.one_of(RECORDS, RECORDS, JSON_VALUES), max_size=12)


def dumps(value: Any, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only, allow_nan=False)


@SETTINGS
@given(elements=ELEMENTS, ascii_only=st.booleans())
def test_random_json_values_as_json_lines_are_each_one_record(
    runner: CliRunner,
    db_factory: Any,
    tmp_path_factory: pytest.TempPathFactory,
    elements: list[Any],
    ascii_only: bool,
) -> None:
    """Random JSON values, one per line, keep the invariants and each is one record."""
    db = db_factory()
    data = "".join(dumps(element, ascii_only) + "\n" for element in elements).encode("utf-8")
    path = write(tmp_path_factory, data, ".jsonl")
    result = invoke(runner, path, db, "--format", "jsonl", "--max-rejects", "100%")
    summary = assert_survives(result, db, data)
    assert summary is not None, result.output
    assert summary["input_records"] == len(elements)


@SETTINGS
@given(elements=ELEMENTS, ascii_only=st.booleans())
def test_random_json_values_in_an_array_are_each_one_record(
    runner: CliRunner,
    db_factory: Any,
    tmp_path_factory: pytest.TempPathFactory,
    elements: list[Any],
    ascii_only: bool,
) -> None:
    """Random JSON values in one array keep the invariants and each element is one record."""
    db, data = db_factory(), dumps(elements, ascii_only).encode("utf-8")
    path = write(tmp_path_factory, data, ".json")
    result = invoke(runner, path, db, "--format", "json", "--max-rejects", "100%")
    summary = assert_survives(result, db)
    assert summary is not None, result.output
    assert summary["input_records"] == len(elements)


@pytest.mark.parametrize("wrap", [lambda b: b, gzip.compress], ids=["plain", "gzip"])
def test_random_bytes_named_jsonl_are_refused_not_dead_lettered(
    runner: CliRunner, db: str, tmp_path: Path, wrap: Any
) -> None:
    """Bytes that are mostly not UTF-8 text (random data, an unknown binary format) are refused
    in one line, exit 1, whatever the name says: read as lines they would load as a success of
    nothing but dead letters. The failed run is logged and nothing else is kept."""
    path = tmp_path / "export.jsonl"
    path.write_bytes(wrap(random.Random(7).randbytes(20_000)))
    result = invoke(runner, path, db)
    assert result.exit_code == 1
    assert "looks like binary data, or text in an encoding other than UTF-8" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert fetch(db, "SELECT COUNT(*) FROM dead_letters") == [(0,)]
    assert fetch(db, "SELECT status FROM run_log") == [("failed",)]


def test_text_with_a_few_latin1_bytes_still_loads(
    runner: CliRunner, db: str, tmp_path: Path
) -> None:
    """A JSON Lines file with some records in Latin-1 is text with odd bytes, not binary: its
    good records load and the others are dead letters with their reason."""
    good = b'{"key": "a%d", "name": "cafe", "value": 1, "ts": "2025-01-01T00:00:00"}\n'
    odd = b'{"key": "b%d", "name": "caf\xe9", "value": 1, "ts": "2025-01-01T00:00:00"}\n'
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"".join((good if i % 2 else odd) % i for i in range(40)))
    result = invoke(runner, path, db)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["loaded"], summary["rejected"]) == (20, 20)
