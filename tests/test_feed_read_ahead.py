"""Reading a feed's next file ahead: while one file's run merges and commits, a forked reader
already reads and validates the next one. Nothing a run leaves may depend on it."""

import contextlib
import gzip
import os
import shutil
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from capstone import RunOptions, pipeline
from capstone.pipeline import run_many
from tests.conftest import fetch
from tests.test_crash import start_run
from tests.test_readahead import children, everything, mixed_feed

COUNTS = {"status", "input_records", "staged", "loaded", "stale", "rejected", "skipped", "late"}
COUNTS |= {"dead_letters", "lineage_entries", "watermark_before", "watermark", "error"}


def landing(folder: Path) -> Path:
    """Four gzip files: a mixed feed; the same records in reverse (behind the watermark, bad
    ones known as dead letters); a copy of the first (skipped by the manifest); and a feed of
    other keys."""
    folder.mkdir()
    first = mixed_feed(folder / "a.jsonl.gz", 3_000)
    with gzip.open(first, "rt") as fh:
        lines = fh.read().splitlines()
    with gzip.open(folder / "b.jsonl.gz", "wt") as fh:
        fh.write("\n".join(reversed(lines)) + "\n")
    shutil.copy(first, folder / "c.jsonl.gz")
    with gzip.open(folder / "d.jsonl.gz", "wt") as fh:
        fh.write(
            "\n".join(line.replace('"k', '"d').replace('"dey"', '"key"') for line in lines) + "\n"
        )
    return folder


def test_a_feed_read_ahead_leaves_what_one_process_leaves(
    db_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each file's summary and everything the feed leaves are the same with the next file read
    ahead as without any reader."""
    folder = landing(tmp_path / "landing")
    started: list[str] = []
    start = pipeline._prefetch

    def prefetch(path: str, *args: Any) -> Any:
        ahead = start(path, *args)
        started.extend([path] if ahead is not None else [])
        return ahead

    monkeypatch.setattr(pipeline, "_prefetch", prefetch)
    results = []
    for ahead in (True, False):
        db = db_factory()
        feed = run_many([str(folder)], db, RunOptions(read_ahead=ahead, batch_size=256))
        summaries = [r.model_dump(include=COUNTS) for r in feed.runs]
        results.append((summaries, everything(db)))
    assert results[0] == results[1]
    summaries = results[0][0]
    assert [s["status"] for s in summaries] == ["success"] * 4
    assert summaries[1]["skipped"] > 0  # behind the watermark, known
    assert summaries[2]["input_records"] == summaries[0]["input_records"]  # skipped whole
    # d is not: c, skipped unread, had no merge for d's reading to overlap.
    assert [Path(path).name for path in started] == ["b.jsonl.gz", "c.jsonl.gz"]


def test_a_feed_read_ahead_leaves_no_reader_behind(db: str, tmp_path: Path) -> None:
    """Once the feed is loaded, every reader, the one started for a file skipped unread too,
    has ended and been reaped."""
    folder = landing(tmp_path / "landing")
    before = set(children(os.getpid()))  # the test session's own (a PostgreSQL server)
    run_many([str(folder)], db, RunOptions(read_ahead=True))
    assert set(children(os.getpid())) == before


def test_a_bad_file_read_ahead_fails_as_without_a_reader(db_factory: Any, tmp_path: Path) -> None:
    """A gzip file cut short, read ahead, fails its own run with the message it fails with in
    one process; with keep_going the file after it loads."""
    folder = landing(tmp_path / "landing")
    data = (folder / "b.jsonl.gz").read_bytes()
    (folder / "b.jsonl.gz").write_bytes(data[: len(data) // 2])
    results = []
    for ahead in (True, False):
        feed = run_many([str(folder)], db_factory(), RunOptions(read_ahead=ahead), keep_going=True)
        results.append([(r.status, r.error, r.loaded) for r in feed.runs])
    assert results[0] == results[1]
    assert [status for status, _, _ in results[0]] == ["success", "failed", "success", "success"]


def processes_of(marker: str) -> list[int]:
    """Live processes whose command line holds `marker` (a run and its forked readers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                status = (entry / "status").read_text()
                if "\nState:\tZ" not in status:
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_ctrl_c_in_a_feed_read_ahead_keeps_the_committed_files_and_leaves_no_reader(
    tmp_path: Path,
) -> None:
    """SIGINT while a later file loads (its next one being read ahead): exit 130, the files
    committed before stay, the current one is rolled back and logged interrupted, and no reader
    outlives the run."""
    folder = tmp_path / "landing"
    folder.mkdir()
    for place, name in enumerate("abcd"):
        with (folder / f"{name}.jsonl").open("w") as fh:
            for i in range(150_000):
                ts = f"2025-02-0{place + 1}T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}"
                fh.write(f'{{"key": "k{i}", "name": "n", "value": {i}, "ts": "{ts}"}}\n')
    db = str(tmp_path / "feed.db")
    process = start_run(str(folder), db, "--read-ahead")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(sqlite3.OperationalError):
            if fetch(db, "SELECT run_id FROM run_log WHERE status = 'running' AND run_id > 1"):
                break
        time.sleep(0.05)
    else:
        pytest.fail(f"the second file never started: {process.stderr.read()!r}")  # type: ignore[union-attr]
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    statuses = [status for (status,) in fetch(db, "SELECT status FROM run_log ORDER BY run_id")]
    assert statuses[0] == "success"
    assert statuses[-1] == "interrupted"
    loaded = fetch(db, "SELECT COUNT(*) FROM files")[0][0]
    assert loaded == statuses.count("success")
    time.sleep(0.5)  # a reader killed with its writer may take a moment to go
    assert processes_of(db) == []
