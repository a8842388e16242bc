"""Parquet input, read with pyarrow by record batch: nested structs and lists, zoned timestamps,
decimals and dates; path fields into structs; Parquet in feeds; clear lines where it cannot be read."""

import datetime as dt
import gzip
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from capstone.cli import app
from capstone.errors import InputError
from capstone.pipeline import run, run_many
from capstone.spec import PipelineSpec
from tests.conftest import fetch

PARIS = pa.timestamp("us", tz="Europe/Paris")
UTC = dt.UTC


def events_table() -> pa.Table:
    """Four events: key a twice (the later row older, so stale), a null value (a reject)."""
    return pa.table(
        {
            "key": ["a", "b", "c", "a"],
            "name": ["n1", "n2", "n3", "n4"],
            "value": [1.5, 2.0, None, 3.0],
            "ts": pa.array(
                [dt.datetime(2025, 1, 15, h, tzinfo=UTC) for h in (10, 11, 12, 9)], PARIS
            ),
            "tags": [["x"], [], None, ["y", "z"]],
            "actor": [{"login": f"u{i}", "id": i} for i in range(4)],
            "price": pa.array([Decimal("1.10"), None, None, None], pa.decimal128(5, 2)),
            "day": [dt.date(2025, 1, 1), None, None, None],
        }
    )


def write(table: pa.Table, path: Path, **options: Any) -> str:
    pq.write_table(table, path, **options)
    return str(path)


def attributes_of(db: str, key: str) -> dict[str, Any]:
    [(value,)] = fetch(db, f"SELECT attributes FROM target WHERE key = '{key}'")
    return value if isinstance(value, dict) else json.loads(value)


def test_a_parquet_file_loads_like_json_records(db: str, tmp_path: Path) -> None:
    """Zoned timestamps become UTC, an older row of a key is stale, a null value is a reject,
    and structs, lists, decimals and dates are kept in attributes as JSON."""
    path = write(events_table(), tmp_path / "events.parquet")
    summary = run(path, db)
    assert (summary.input_records, summary.loaded, summary.stale, summary.rejected) == (4, 2, 1, 1)
    assert summary.watermark == "2025-01-15T11:00:00"
    assert attributes_of(db, "a") == {
        "actor": {"id": 0, "login": "u0"},
        "day": "2025-01-01",
        "price": "1.10",
        "tags": ["x"],
    }


def test_a_rejected_row_is_dead_lettered_as_json_at_its_row_number(db: str, tmp_path: Path) -> None:
    """Position is the row number from 1; the raw text is the row as JSON, times with offsets."""
    path = write(events_table(), tmp_path / "events.parquet")
    run(path, db)
    [(position, reason, raw)] = fetch(db, "SELECT position, reason, raw FROM dead_letters")
    assert (position, reason) == (3, "value.float_type")
    assert json.loads(raw) == {
        "key": "c",
        "name": "n3",
        "value": None,
        "ts": "2025-01-15T13:00:00+01:00",
        "tags": None,
        "actor": {"login": "u2", "id": 2},
        "price": None,
        "day": None,
    }


def test_path_fields_read_inside_parquet_structs(db: str, tmp_path: Path) -> None:
    """GitHub-style rows: `login` comes from the actor struct, the event time from a naive
    timestamp column (UTC), decimals as declared floats."""
    table = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "actor": [{"login": "ada"}, {"login": "bob"}, {"login": None}],
            "created_at": pa.array(
                [dt.datetime(2025, 1, 15, 10, m) for m in range(3)], pa.timestamp("ms")
            ),
            "amount": pa.array(
                [Decimal("9.99"), Decimal("0.50"), Decimal("1")], pa.decimal128(6, 2)
            ),
        }
    )
    spec = PipelineSpec.model_validate(
        {
            "name": "github",
            "key": "id",
            "event_time": "created_at",
            "fields": {
                "id": {"type": "integer"},
                "login": {"type": "string", "path": "actor.login"},
                "created_at": {"type": "timestamp"},
                "amount": {"type": "float"},
            },
        }
    )
    summary = run(write(table, tmp_path / "gh.parquet"), db, spec=spec)
    assert (summary.loaded, summary.rejected) == (2, 1)
    assert fetch(db, "SELECT id, login, amount FROM github ORDER BY id") == [
        (1, "ada", 9.99),
        (2, "bob", 0.5),
    ]
    assert fetch(db, "SELECT reason FROM dead_letters") == [("login.string_type",)]


def test_many_row_groups_stream_in_order(db_path: str, tmp_path: Path) -> None:
    """A file of many row groups is read batch by batch, every row once, in order."""
    count = 25_000
    table = pa.table(
        {
            "key": [f"k{i % 1000}" for i in range(count)],
            "name": ["n"] * count,
            "value": [float(i) for i in range(count)],
            "ts": [f"2025-01-15T00:00:{i % 60:02d}" for i in range(count)],
        }
    )
    path = write(table, tmp_path / "big.parquet", row_group_size=3_000)
    summary = run(path, db_path)
    assert summary.input_records == count
    assert summary.staged == count
    assert fetch(db_path, "SELECT COUNT(*) FROM target") == [(1000,)]


def test_parquet_in_a_folder_beside_compressed_json_lines(db: str, tmp_path: Path) -> None:
    """A feed folder may mix Parquet and gzip JSON Lines; a rerun skips the Parquet file by its
    content, unread."""
    folder = tmp_path / "landing"
    folder.mkdir()
    write(events_table(), folder / "a.parquet")
    with gzip.open(folder / "b.jsonl.gz", "wt") as fh:
        fh.write('{"key": "z", "name": "n", "value": 1, "ts": "2025-01-16T00:00:00"}\n')
    first = run_many([str(folder)], db)
    assert [r.loaded for r in first.runs] == [2, 1]
    again = run_many([str(folder)], db)
    assert [r.skipped for r in again.runs] == [4, 1]
    assert all(r.same_content_as is not None for r in again.runs)


def test_compressed_parquet_is_refused_with_a_clear_line(db: str, tmp_path: Path) -> None:
    """Parquet inside gzip cannot be sought in: refused, naming what to do."""
    plain = write(events_table(), tmp_path / "e.parquet")
    packed = tmp_path / "e.parquet.gz"
    packed.write_bytes(gzip.compress(Path(plain).read_bytes()))
    with pytest.raises(InputError, match="is Parquet gzip-compressed; capstone reads Parquet"):
        run(str(packed), db)


def test_a_damaged_parquet_file_fails_the_run_cleanly(db: str, tmp_path: Path) -> None:
    """A cut-off file names itself; nothing is loaded and the run is logged failed."""
    path = tmp_path / "cut.parquet"
    data = Path(write(events_table(), tmp_path / "whole.parquet")).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="is not a Parquet file capstone can read"):
        run(str(path), db)
    assert fetch(db, "SELECT status FROM run_log") == [("failed",)]
    assert fetch(db, "SELECT COUNT(*) FROM target") == [(0,)]


def test_format_options_and_content_must_agree(
    runner: CliRunner, db: str, tmp_path: Path, sample: str
) -> None:
    """--format csv on Parquet, or --format parquet on text, fails with exit 1 and one line."""
    path = write(events_table(), tmp_path / "e.parquet")
    result = runner.invoke(app, ["run", "-i", path, "--db", db, "--format", "csv"])
    assert result.exit_code == 1
    assert (
        result.stderr == f"capstone: error: {path} is a Parquet file, not csv; leave out --format\n"
    )
    result = runner.invoke(app, ["run", "-i", sample, "--db", db, "--format", "parquet"])
    assert result.exit_code == 1
    assert "is not a Parquet file (it does not start with PAR1)" in result.stderr


def test_without_pyarrow_the_line_says_how_to_install_it(tmp_path: Path) -> None:
    """A machine without the extra gets one line with the pip command, exit 1."""
    path = write(events_table(), tmp_path / "e.parquet")
    code = (
        "import sys; sys.modules['pyarrow'] = None; sys.modules['pyarrow.parquet'] = None; "
        "from capstone.__main__ import main; "
        f"sys.argv = ['capstone', 'run', '-i', {path!r}, '--db', {str(tmp_path / 'x.db')!r}]; main()"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert done.stderr == (
        "capstone: error: reading Parquet needs pyarrow; install it with: "
        "pip install 'capstone[parquet]'\n"
    )


def _peak_kib(code: str) -> int:
    """The peak resident memory of a fresh Python running `code`, from its VmHWM: not
    ru_maxrss, which Linux keeps across execve (a child would report this process's peak)."""
    probe = "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])"
    done = subprocess.run(
        [sys.executable, "-c", f"{code}; {probe}"], capture_output=True, text=True, check=True
    )
    return int(done.stdout.strip())


@pytest.mark.slow
def test_a_million_rows_load_in_about_the_memory_of_json_lines(tmp_path: Path) -> None:
    """Streaming by record batch: the peak memory of a 1M-row Parquet load stays within 20% of
    the same records loaded from JSON Lines, plus what importing pyarrow itself takes (a fixed
    cost, about 45 MB, whatever the file)."""
    count = 1_000_000
    keys = [f"k{i % 50_000}" for i in range(count)]
    stamps = [
        f"2025-01-15T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}" for i in range(count)
    ]
    table = pa.table({"key": keys, "name": ["n"] * count, "value": [1.0] * count, "ts": stamps})
    parquet = write(table, tmp_path / "m.parquet")
    lines = tmp_path / "m.jsonl"
    with lines.open("w") as fh:
        for key, stamp in zip(keys, stamps, strict=True):
            fh.write(f'{{"key": "{key}", "name": "n", "value": 1.0, "ts": "{stamp}"}}\n')
    del table, keys, stamps
    load = "from capstone.pipeline import run; run({!r}, {!r})"
    from_lines = _peak_kib(load.format(str(lines), str(tmp_path / "l.db")))
    from_parquet = _peak_kib(load.format(parquet, str(tmp_path / "p.db")))
    pyarrow_cost = _peak_kib("import capstone.pipeline, pyarrow.parquet") - _peak_kib(
        "import capstone.pipeline"
    )
    assert from_parquet <= (from_lines + pyarrow_cost) * 1.2, (
        from_parquet,
        from_lines,
        pyarrow_cost,
    )
