"""Reading ahead: a forked reader validates while the run's process writes, with the same results
and the same failure semantics as one process."""

import contextlib
import gzip
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
import pytest

from capstone import RunOptions, readahead, run
from capstone.dead_letters import export_line
from capstone.errors import InputError
from capstone.readahead import read_ahead
from capstone.store import open_store
from tests.conftest import KEEP_REJECTS, event, fetch
from tests.test_crash import STATE, start_run

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc for the reader")


def mixed_feed(path: Path, count: int) -> str:
    """A gzip JSON Lines file with updates, stale versions, invalid and malformed records."""
    lines = []
    for i in range(count):
        ts = f"2025-03-01T{(i * 7919) % 24:02d}:{i % 60:02d}:00"
        if i % 97 == 0:
            lines.append("{not json")
        elif i % 89 == 0:
            lines.append(orjson.dumps(event(f"k{i % 300}", ts, name="")).decode())
        else:
            lines.append(orjson.dumps(event(f"k{i % 300}", ts, value=i)).decode())
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    return str(path)


def everything(db: str) -> dict[str, Any]:
    """What a run leaves: target, lineage, dead letters and the manifest's hash."""
    return {
        "target": fetch(db, "SELECT key, name, value, ts, attributes FROM target ORDER BY key"),
        "lineage": fetch(
            db, "SELECT step, key, position, detail FROM lineage ORDER BY position, id"
        ),
        "letters": fetch(
            db, "SELECT position, key, reason, raw, times_seen FROM dead_letters ORDER BY id"
        ),
        "files": fetch(db, "SELECT sha256, size, records FROM files"),
    }


@pytest.mark.parametrize("batch_size", [1, 64, 10_000])
def test_read_ahead_leaves_what_one_process_leaves(
    db_factory: Any, tmp_path: Path, batch_size: int
) -> None:
    """The same gzip feed loaded with and without a reader gives the same summary, target,
    lineage, dead letters and manifest entry, at any batch size."""
    feed = mixed_feed(tmp_path / "feed.jsonl.gz", 3_000)
    results = []
    for ahead in (True, False):
        db = db_factory()
        summary = run(feed, db, RunOptions(read_ahead=ahead, batch_size=batch_size))
        counts = summary.model_dump(include={"input_records", "staged", "loaded", "stale"})
        counts |= summary.model_dump(include={"rejected", "dead_letters", "lineage_entries"})
        results.append((counts, everything(db)))
    assert results[0] == results[1]
    assert results[0][0]["rejected"] > 0
    assert results[0][0]["stale"] > 0


@pytest.mark.parametrize("busy", [True, False], ids=["reader validates", "writer validates"])
def test_where_a_batch_is_validated_changes_nothing(
    db_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, busy: bool
) -> None:
    """Whichever process validates the batches (the share is decided by timing, batch by batch),
    the run leaves what one process leaves."""
    feed = mixed_feed(tmp_path / "feed.jsonl.gz", 3_000)
    alone = db_factory()
    run(feed, alone, RunOptions(read_ahead=False, batch_size=64))
    monkeypatch.setattr(readahead._Pace, "writer_busy", lambda self: busy)
    shared = db_factory()
    run(feed, shared, RunOptions(read_ahead=True, batch_size=64))
    assert everything(shared) == everything(alone)


def test_the_reader_sees_the_writer_busy_while_the_pipe_holds_unread_bytes() -> None:
    """The writer counts as busy while a batch sent has not been received, and not once it has."""
    receive, send = os.pipe()
    with Connection(receive, writable=False) as writer, Connection(send, readable=False) as sent:
        pace = readahead._Pace(sent)
        assert not pace.writer_busy()
        pace.send(["a", "batch"])
        assert pace.writer_busy()
        assert writer.recv() == ["a", "batch"]
        assert not pace.writer_busy()


def test_a_second_run_of_a_read_ahead_file_is_skipped_by_its_hash(db: str, tmp_path: Path) -> None:
    """The manifest records the hash of the bytes the reader read: rerun, the file is skipped
    unread."""
    feed = mixed_feed(tmp_path / "feed.jsonl.gz", 500)
    run(feed, db, RunOptions(read_ahead=True))
    again = run(feed, db, RunOptions(read_ahead=True))
    assert (again.skipped, again.staged, again.rejected) == (500, 0, 0)


def test_an_input_error_in_the_reader_fails_the_run_as_in_one_process(
    db_path: str, tmp_path: Path
) -> None:
    """A JSON array cut short fails with the message one process gives, logged once, and
    keeps nothing."""
    elements = [orjson.dumps(event(f"k{i}", "2025-03-01T00:00:00")).decode() for i in range(50)]
    cut = tmp_path / "cut.json"
    cut.write_text("[" + ",".join(elements) + ',{"key": "k5')
    messages = []
    for ahead in (False, True):
        with pytest.raises(InputError) as raised:
            run(str(cut), db_path, RunOptions(read_ahead=ahead))
        messages.append(str(raised.value))
    assert messages[0] == messages[1]
    assert fetch(db_path, "SELECT status, error FROM run_log") == [
        ("failed", messages[0]),
        ("failed", messages[0]),
    ]
    assert fetch(db_path, "SELECT COUNT(*) FROM target") == [(0,)]


def test_an_error_in_the_reader_stops_the_reader(tmp_path: Path) -> None:
    """A reader whose items raise sends the error over; the writer raises it and the reader is
    gone when the block ends."""

    def produce(writer_busy: Callable[[], bool]) -> Iterator[int]:
        yield 1
        raise InputError("bad input at item 2; fix it")

    taken: list[int] = []
    with (
        pytest.raises(InputError, match="bad input at item 2"),
        read_ahead(produce, lambda: None) as reader,
    ):
        taken.extend(reader)
    assert taken == [1]
    # Gone and reaped: ended on its own after sending the error, or killed by the writer's leaving
    # if it had not exited yet (either may happen first).
    assert reader.exitcode in (0, -signal.SIGKILL)
    with pytest.raises(ProcessLookupError):
        os.kill(reader.reader, 0)


def test_a_reader_out_of_memory_is_a_memory_error_in_the_writer() -> None:
    """A MemoryError in the reader crosses as a MemoryError (the run then fails with its one
    line about memory, as in one process)."""

    def produce(writer_busy: Callable[[], bool]) -> Iterator[int]:
        yield 1
        raise MemoryError

    with pytest.raises(MemoryError), read_ahead(produce, lambda: None) as reader:
        list(reader)


def test_a_reader_bug_is_one_line_not_a_traceback_of_the_reader() -> None:
    """An unexpected exception in the reader crosses as one RuntimeError naming it."""

    def produce(writer_busy: Callable[[], bool]) -> Iterator[int]:
        yield {}["missing"]  # type: ignore[index]

    with (
        pytest.raises(RuntimeError, match="KeyError: 'missing'"),
        read_ahead(produce, lambda: None) as reader,
    ):
        list(reader)


# -- processes ------------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(part) for part in text.split()]


def gone(pid: int) -> bool:
    """Whether the process ended (exited, or a zombie waiting for its parent)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


@contextlib.contextmanager
def run_on(fifo: Path, db: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`capstone run --read-ahead` on `fifo`, fed valid lines by a thread until the block ends;
    yields the run's process and its reader's pid, once records are flowing."""
    process = start_run(str(fifo), db, "--read-ahead")
    stop = threading.Event()

    def write() -> None:
        with contextlib.suppress(BrokenPipeError), fifo.open("w") as fh:
            i = 0
            while not stop.is_set():
                fh.write(orjson.dumps(event(f"k{i}", "2025-03-01T00:00:00")).decode() + "\n")
                fh.flush()
                i += 1
                if i % 100 == 0:
                    time.sleep(0.01)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        yield process, reader_of(process)
    finally:
        stop.set()
        writer.join(timeout=10)


def reader_of(process: subprocess.Popen[bytes]) -> int:
    """The run's reader, once it runs and records are flowing."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"run ended early: {process.stderr.read()!r}")  # type: ignore[union-attr]
        found = children(process.pid)
        if found:
            time.sleep(0.5)
            return found[0]
        time.sleep(0.02)
    pytest.fail("the reader never started")


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "feed.jsonl"
    os.mkfifo(path)
    return path


@pytest.mark.slow
def test_a_killed_reader_fails_the_run_in_one_line(fifo: Path, db_path: str, sample: str) -> None:
    """kill -9 of the reader: the run fails with exit 1 and one line, keeping nothing."""
    run(sample, db_path)
    before = fetch(db_path, STATE)
    with run_on(fifo, db_path) as (process, reader):
        os.kill(reader, signal.SIGKILL)
        _, err = process.communicate(timeout=60)
    lines = err.decode().strip().splitlines()
    assert process.returncode == 1
    assert len(lines) == 1
    assert "Traceback" not in lines[0]
    assert "the process reading the input was killed by signal 9" in lines[0]
    assert fetch(db_path, STATE) == before
    assert fetch(db_path, "SELECT status FROM run_log ORDER BY run_id") == [
        ("success",),
        ("failed",),
    ]


@pytest.mark.slow
def test_kill_9_of_the_writer_takes_the_reader_with_it(
    fifo: Path, db_path: str, sample: str
) -> None:
    """kill -9 of the run's process: its reader dies too, and the database is as it was."""
    run(sample, db_path)
    before = fetch(db_path, STATE)
    with run_on(fifo, db_path) as (process, reader):
        process.kill()
        process.communicate(timeout=60)
        deadline = time.monotonic() + 10
        while not gone(reader) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert gone(reader)
    assert fetch(db_path, STATE) == before
    with open_store(db_path) as store:
        assert [r.status for r in store.runs()] == ["abandoned", "success"]


@pytest.mark.slow
def test_ctrl_c_rolls_back_and_stops_the_reader(fifo: Path, db_path: str) -> None:
    """SIGINT to the run (the reader ignores it): exit 130, the run logged interrupted, the reader
    stopped, nothing kept."""
    with run_on(fifo, db_path) as (process, reader):
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert gone(reader)
    assert fetch(db_path, "SELECT status FROM run_log") == [("interrupted",)]
    assert fetch(db_path, "SELECT COUNT(*) FROM target") == [(0,)]


def test_a_replayed_export_resolves_the_same_letters_with_a_reader(
    db_factory: Any, tmp_path: Path
) -> None:
    """An edited dead-letter export replayed through a reader (`run --replay`) resolves and
    keeps the same letters as in one process: which letter a line claims depends on the lines
    before it, so a replay's reader validates every batch itself."""
    bad = [event(f"k{i}", "2025-03-01T00:00:00", name="") for i in range(40)]
    feed = tmp_path / "bad.jsonl"
    feed.write_text("\n".join(orjson.dumps(r).decode() for r in bad) + "\n")
    results = []
    for ahead in (True, False):
        db = db_factory()
        run(str(feed), db, KEEP_REJECTS)
        with open_store(db) as store:
            letters = store.dead_letters()
        lines = []
        for letter in letters:
            line = orjson.loads(export_line(letter) or b"{}")
            if letter.id % 2:
                line["name"] = "fixed"  # half fixed, half still bad
            lines.append(orjson.dumps(line).decode())
            lines.append(orjson.dumps(line).decode())  # and every line twice
        export = tmp_path / f"export-{ahead}.jsonl"
        export.write_text("\n".join(lines) + "\n")
        summary = run(str(export), db, RunOptions(read_ahead=ahead, batch_size=7), replay=True)
        counts = summary.model_dump(include={"staged", "rejected", "dead_letters_updated"})
        results.append((counts, fetch(db, "SELECT id, resolved_run_id IS NULL FROM dead_letters")))
    assert results[0] == results[1]
