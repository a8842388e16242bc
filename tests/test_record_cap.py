"""One record-size cap for every format, found before the record is held whole; batches bounded
by bytes as well as records; running out of memory is a failed run with one line, not a crash."""

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import capstone._jsonarray
import capstone.pipeline
from capstone.errors import InputError
from capstone.pipeline import RunOptions, run
from capstone.spec import PipelineSpec
from tests.conftest import fetch

CAP = 4096
RECORD = '{{"key": "{key}", "name": "n", "value": 1, "ts": "2025-01-01T00:00:00"{pad}}}'


def capped(limit: int = CAP) -> PipelineSpec:
    """The seed's fields with a small cap, so tests need no large files."""
    return PipelineSpec.model_validate(
        {
            "name": "capped",
            "key": "key",
            "event_time": "ts",
            "max_record_bytes": limit,
            "fields": {
                "key": {"type": "string"},
                "name": {"type": "string"},
                "value": {"type": "float"},
                "ts": {"type": "timestamp"},
            },
        }
    )


def record(key: str, size: int = 0) -> str:
    """A valid record whose text is `size` characters long (at least its fields' length)."""
    text = RECORD.format(key=key, pad="")
    if size > len(text):
        pad = f', "pad": "{"x" * (size - len(text) - 11)}"'
        text = RECORD.format(key=key, pad=pad)
    return text


def expect_refused(db: str, path: Path, where: str) -> None:
    message = (
        f"{path}: the record at {where} is larger than 4 KB (max_record_bytes); split the record, "
        "or raise max_record_bytes for the pipeline"
    )
    with pytest.raises(InputError) as refused:
        run(str(path), db, spec=capped())
    assert str(refused.value) == message
    assert fetch(db, "SELECT status, error FROM run_log") == [("failed", message)]
    assert fetch(db, "SELECT COUNT(*) FROM lineage") == [(0,)]
    assert fetch(db, "SELECT COUNT(*) FROM dead_letters") == [(0,)]


def test_a_json_lines_record_over_the_cap_fails_the_file(db: str, tmp_path: Path) -> None:
    """Line 2 is one byte over: the file fails naming it, and nothing of the file is kept."""
    path = tmp_path / "big.jsonl"
    path.write_text(record("a") + "\n" + record("b", CAP + 1) + "\n" + record("c") + "\n")
    expect_refused(db, path, "line 2")


def test_a_json_lines_record_at_the_cap_loads(db: str, tmp_path: Path) -> None:
    """Exactly the cap (the newline not counted) is allowed."""
    path = tmp_path / "fits.jsonl"
    path.write_text(record("a", CAP) + "\n" + record("b", CAP))
    assert run(str(path), db, spec=capped()).loaded == 2


def test_a_json_array_element_over_the_cap_fails_the_file(db: str, tmp_path: Path) -> None:
    """An array element is held to the same cap, counted from its first character."""
    path = tmp_path / "big.json"
    path.write_text(f"[{record('a')}, {record('b', CAP + 1)}]")
    expect_refused(db, path, "element 1")


def test_a_large_array_element_is_refused_after_reading_little_more_than_the_cap(
    db_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An element of 32 MB under a 1 MB cap is refused once about 2 MB of it was buffered, not
    after buffering all of it (or decoding it once per megabyte, which took minutes)."""
    path = tmp_path / "huge.json"
    path.write_text(f"[{record('a')}, {record('b', 32 << 20)}]")
    buffered: list[int] = []
    more = capstone._jsonarray._Buffer.more

    def counted(buffer: capstone._jsonarray._Buffer, room: int = 1 << 20) -> bool:
        found = more(buffer, room)
        buffered.append(len(buffer.text))
        return found

    monkeypatch.setattr(capstone._jsonarray._Buffer, "more", counted)
    one_process = RunOptions(read_ahead=False)  # the counts are kept in this process
    with pytest.raises(InputError, match="the record at element 1 is larger than 1 MB"):
        run(str(path), db_path, one_process, spec=capped(1 << 20))
    assert max(buffered) <= 3 << 20, max(buffered)
    assert len(buffered) <= 4


def test_a_csv_row_over_the_cap_fails_the_file(db: str, tmp_path: Path) -> None:
    """A row (here a quoted cell over several lines) is held to the cap as a whole."""
    path = tmp_path / "big.csv"
    cell = ("y" * 100 + "\n") * (CAP // 100 + 1)
    path.write_text(
        f'key,name,value,ts\na,n,1,2025-01-01T00:00:00\nb,"{cell}",1,2025-01-01T00:00:00\n'
    )
    expect_refused(db, path, "line 3")


def test_a_parquet_row_over_the_cap_fails_the_file(db: str, tmp_path: Path) -> None:
    """A Parquet row's JSON text is held to the cap too."""
    path = tmp_path / "big.parquet"
    table = pa.table(
        {
            "key": ["a", "b"],
            "name": ["n", "n" * (CAP + 1)],
            "value": [1.0, 1.0],
            "ts": ["2025-01-01T00:00:00"] * 2,
        }
    )
    pq.write_table(table, path)
    expect_refused(db, path, "row 2")


def test_batches_close_on_bytes_before_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a byte bound of 10, records of 4 bytes make batches of 3 however large --batch-size."""
    monkeypatch.setattr(capstone.pipeline, "MAX_BATCH_BYTES", 10)
    items = [(i, b"abcd", None) for i in range(7)]
    sizes = [len(batch) for batch in capstone.pipeline._batches(items, 10_000)]
    assert sizes == [3, 3, 1]
    assert [len(b) for b in capstone.pipeline._batches(items, 2)] == [2, 2, 2, 1]


def _peak_kib(args: list[str], stdin: bytes) -> int:
    code = (
        "import sys; from capstone.__main__ import main; sys.argv = ['capstone', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1], "
        "file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *args], input=stdin, capture_output=True, check=True
    )
    return int(done.stderr.decode().strip().splitlines()[-1])


@pytest.mark.slow
def test_large_records_on_stdin_are_held_a_batch_of_bytes_at_a_time(tmp_path: Path) -> None:
    """300 records of 1 MB each on standard input: the default --batch-size of 10,000 would hold
    all 300 MB; the byte bound keeps the peak near 64 MB of records (well under 300 MB in all)."""
    one = (record("k{}", 1 << 20) + "\n").replace("k{}", "k%d")
    data = "".join(one % i for i in range(300)).encode()
    peak = _peak_kib(["run", "-i", "-", "--db", str(tmp_path / "x.db"), "-q"], data)
    assert peak < 300 * 1024, peak
    assert fetch(str(tmp_path / "x.db"), "SELECT COUNT(*) FROM target") == [(300,)]


def test_running_out_of_memory_is_a_failed_run_with_one_line(tmp_path: Path) -> None:
    """Under an address-space limit too small for a batch, the run fails with one line and
    exit 1, logged as failed: no crash, no traceback. (One process, whose batches are 64 MB; a
    reader's are a quarter of that, and its MemoryError crosses to the writer: test_readahead.)"""
    path = tmp_path / "mb.jsonl"
    with path.open("w") as fh:
        for i in range(200):
            fh.write(record(f"k{i}", 1 << 20) + "\n")
    db = tmp_path / "x.db"
    limit = "import resource; resource.setrlimit(resource.RLIMIT_AS, (150 << 20, 150 << 20))"
    code = (
        "import sys; from capstone.__main__ import main; "
        f"sys.argv = ['capstone', 'run', '-i', {str(path)!r}, '--db', {str(db)!r}, '-q', "
        "'--no-read-ahead']; "
        f"{limit}; main()"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 1, done.stderr
    assert done.stderr == (
        f"capstone: error: {path}: a batch of this file is too large for the memory available; "
        "lower --batch-size or the pipeline's max_record_bytes, or free memory\n"
    )
    assert fetch(str(db), "SELECT status FROM run_log") == [("failed",)]


@pytest.mark.slow
def test_a_large_record_without_the_memory_for_it_fails_cleanly(tmp_path: Path) -> None:
    """A 40 MB record (under the cap) in a process allowed 400 MB of address space: the Rust
    parsers would abort or crash on the failed allocation, so the record's room is asked for
    first, and the run fails in one line instead."""
    path = tmp_path / "big.jsonl"
    path.write_text(record("big", 40 << 20) + "\n")
    db = tmp_path / "x.db"
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (400 << 20, 400 << 20)); "
        "from capstone.__main__ import main; "
        f"sys.argv = ['capstone', 'run', '-i', {str(path)!r}, '--db', {str(db)!r}, '-q']; main()"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 1, (done.returncode, done.stderr[-500:])
    assert done.stderr == (
        f"capstone: error: {path}: a batch of this file is too large for the memory available; "
        "lower --batch-size or the pipeline's max_record_bytes, or free memory\n"
    )
    assert fetch(str(db), "SELECT status FROM run_log") == [("failed",)]
