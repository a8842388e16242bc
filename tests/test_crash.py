"""Crash safety and faults: killed processes, signals, full disks, locks, bad database files."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from capstone import RunOptions, run
from capstone.errors import InputError, InterruptedRun, LockError, StoreError
from capstone.pipeline import run_source
from capstone.sources import SourceFile
from capstone.store import open_store
from capstone.store.sqlite import SQLiteStore
from capstone.summary import RunStatus
from tests.conftest import fetch

STATE = (
    "SELECT (SELECT COUNT(*) FROM target), (SELECT COUNT(*) FROM lineage), "
    "(SELECT COUNT(*) FROM dead_letters), (SELECT value FROM watermarks WHERE name = 'events')"
)


def big_jsonl(path: Path, count: int) -> str:
    """A JSON Lines file of `count` valid records with rising timestamps (fast to write)."""
    base = datetime(2025, 2, 1)
    with path.open("w") as fh:
        for i in range(count):
            ts = (base + timedelta(seconds=i)).isoformat()
            fh.write(f'{{"key": "k{i % 50_000}", "name": "n", "value": {i}, "ts": "{ts}"}}\n')
    return str(path)


def _interruptible() -> None:
    # A shell starts background jobs with SIGINT ignored, and Python keeps an inherited ignore:
    # give the child the terminal default, as a user's foreground run has.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_run(input_path: str, db: str, *options: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "capstone", "run", "-i", input_path, "--db", db, "-q", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_interruptible,  # noqa: PLW1509 (the test process starts no threads)
    )


def wait_until_running(db: str, process: subprocess.Popen[bytes]) -> None:
    """Wait until the child has logged its running row and is inside its transaction."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"run ended before it could be stopped: {process.stderr.read()!r}")  # type: ignore[union-attr]
        try:
            rows = fetch(db, "SELECT 1 FROM run_log WHERE status = 'running'")
        except sqlite3.OperationalError:
            rows = []
        if rows:
            time.sleep(0.5)  # let it get well into staging
            return
        time.sleep(0.02)
    pytest.fail("run never started")


@pytest.mark.slow
def test_kill_9_leaves_the_database_as_it_was(db_path: str, sample: str, tmp_path: Path) -> None:
    """SIGKILL mid-run changes nothing; the next command marks the run abandoned; reruns work."""
    run(sample, db_path)
    before = fetch(db_path, STATE)
    big = big_jsonl(tmp_path / "big.jsonl", 400_000)
    process = start_run(big, db_path)
    wait_until_running(db_path, process)
    process.kill()
    process.communicate()
    assert fetch(db_path, STATE) == before
    assert fetch(db_path, "PRAGMA integrity_check") == [("ok",)]
    store = open_store(db_path)
    statuses = [r.status for r in store.runs()]
    store.close()
    assert statuses == ["abandoned", "success"]
    assert run(sample, db_path).status == "success"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_rolls_back_and_logs_interrupted(
    db_path: str, sample: str, tmp_path: Path, sig: int
) -> None:
    """Ctrl-C or SIGTERM: rollback, status interrupted, exit 130, one line, no traceback."""
    run(sample, db_path)
    before = fetch(db_path, STATE)
    process = start_run(big_jsonl(tmp_path / "big.jsonl", 400_000), db_path)
    wait_until_running(db_path, process)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr.decode()
    assert stderr.decode().count("\n") == 1
    assert b"Traceback" not in stderr
    assert fetch(db_path, STATE) == before
    assert fetch(db_path, "SELECT status FROM run_log ORDER BY run_id DESC LIMIT 1") == [
        ("interrupted",)
    ]


def test_disk_full_fails_cleanly(db_path: str, sample: str, tmp_path: Path) -> None:
    """A full disk (max_page_count) gives one StoreError, a failed row and no partial data."""
    run(sample, db_path)
    before = fetch(db_path, STATE)
    store = SQLiteStore(db_path)
    pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
    store.conn.execute(f"PRAGMA max_page_count = {pages + 20}")
    with (
        SourceFile(big_jsonl(tmp_path / "big.jsonl", 20_000)) as source,
        pytest.raises(StoreError, match="free disk space"),
    ):
        run_source(source, store, RunOptions())
    store.close()
    assert fetch(db_path, STATE) == before
    assert fetch(db_path, "SELECT status FROM run_log ORDER BY run_id DESC LIMIT 1") == [
        ("failed",)
    ]


def test_locked_database_fails_after_the_lock_timeout(db_path: str, sample: str) -> None:
    """While another connection holds the write lock, a run fails with a LockError."""
    run(sample, db_path)
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(LockError, match="lock"):
            run(sample, db_path, RunOptions(lock_timeout=0.2))
        assert time.monotonic() - started < 30
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_database_from_a_newer_capstone_is_refused(db_path: str, sample: str) -> None:
    """A schema version above this capstone's is refused with an upgrade hint."""
    run(sample, db_path)
    conn = sqlite3.connect(db_path)
    conn.execute("INSERT INTO schema_migrations VALUES (999, 'future', '2030-01-01')")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer capstone"):
        open_store(db_path)


def test_undecodable_input_mid_run_changes_nothing(
    db_path: str, sample: str, tmp_path: Path
) -> None:
    """A CSV that turns out not to be UTF-8 part-way fails the run and keeps nothing of it."""
    run(sample, db_path)
    before = fetch(db_path, STATE)
    path = tmp_path / "bad.csv"
    rows = "".join(f"k{i},n,{i},2025-03-01T00:00:00\n" for i in range(30_000))
    path.write_bytes(b"key,name,value,ts\n" + rows.encode() + b"x,\xff\xfe,1,2025-03-01T00:00:00\n")
    with pytest.raises(InputError, match="UTF-8"):
        run(str(path), db_path, RunOptions(batch_size=1000))
    assert fetch(db_path, STATE) == before
    assert fetch(db_path, "SELECT status FROM run_log ORDER BY run_id DESC LIMIT 1") == [
        ("failed",)
    ]


def test_read_only_database_file_is_a_clear_error(db_path: str, sample: str) -> None:
    """An immutable database file gives one StoreError that names the problem."""
    run(sample, db_path)
    for suffix in ("-wal", "-shm"):
        Path(db_path + suffix).unlink(missing_ok=True)
    if subprocess.run(["chattr", "+i", db_path], capture_output=True, check=False).returncode:
        pytest.skip("chattr +i is not supported here (needed to make a file read-only for root)")
    try:
        with pytest.raises(StoreError, match=r"read-only|cannot open|readonly"):
            run(sample, db_path)
    finally:
        subprocess.run(["chattr", "-i", db_path], check=False)


def test_abandoned_marking_ignores_live_processes(db_path: str, sample: str) -> None:
    """A running row of a live process is not marked abandoned."""
    run(sample, db_path)
    conn = sqlite3.connect(db_path)
    conn.execute(
        "INSERT INTO run_log (pipeline, status, started_at, host, pid) "
        "VALUES ('other', 'running', '2025-01-01', ?, ?)",
        (os.uname().nodename, os.getppid()),
    )
    conn.commit()
    conn.close()
    store = open_store(db_path)
    assert store.runs()[0].status == "running"
    store.close()


def test_interrupt_as_commit_returns_keeps_the_run_and_says_so(
    db_path: str, sample: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C landing just after COMMIT: the run stays `success` and the error says it committed."""
    from capstone.store import sqlite as backend

    finish = backend.SQLiteRun.finish

    def finish_then_interrupt(self: Any, *args: Any) -> None:
        finish(self, *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(backend.SQLiteRun, "finish", finish_then_interrupt)
    with pytest.raises(InterruptedRun, match="committed; its results are kept"):
        run(sample, db_path)
    assert fetch(db_path, "SELECT status, watermark_after IS NOT NULL FROM run_log") == [
        ("success", 1)
    ]
    assert fetch(db_path, "SELECT COUNT(*) > 0 FROM target") == [(1,)]


def test_interrupt_while_closing_after_a_run_says_it_committed(
    db_path: str, sample: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C during the checkpoint at close: the committed run is reported as kept."""
    close = SQLiteStore.close

    def close_then_interrupt(self: SQLiteStore) -> None:
        close(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(SQLiteStore, "close", close_then_interrupt)
    with pytest.raises(InterruptedRun, match="run 1 committed"):
        run(sample, db_path)
    assert fetch(db_path, "SELECT status FROM run_log") == [("success",)]


def test_a_failed_run_record_never_overwrites_a_committed_run(db_path: str, sample: str) -> None:
    """end_run only ends runs still marked running: the run log cannot contradict the data."""
    summary = run(sample, db_path)
    store = open_store(db_path)
    store.end_run(summary.model_copy(update={"status": RunStatus.INTERRUPTED, "watermark": None}))
    store.close()
    assert fetch(db_path, "SELECT status, watermark_after IS NOT NULL FROM run_log") == [
        ("success", 1)
    ]
