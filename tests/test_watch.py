"""Watch mode: files are taken once settled, each once per content, and SIGTERM stops cleanly."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

import capstone.watch
from capstone.manifest import unchanged_since_load
from capstone.pipeline import run_many
from capstone.store import open_store
from capstone.summary import RunSummary
from capstone.watch import Watcher, already_loaded, watch
from tests.conftest import event, fetch


def write(path: Path, *keys: str) -> Path:
    path.write_bytes(b"".join(orjson.dumps(event(k, "2025-01-01T00:00:00Z")) + b"\n" for k in keys))
    return path


class TestWatcher:
    def test_a_file_is_ready_only_after_it_settles(self, tmp_path: Path) -> None:
        """A file just written is not ready; once unchanged for `settle` seconds it is."""
        now = [time.time()]
        path = write(tmp_path / "a.jsonl", "a")
        watcher = Watcher([str(tmp_path)], str(tmp_path / "x.db"), settle=5, clock=lambda: now[0])
        assert watcher.ready() == []
        now[0] += 3
        write(path, "a", "b")  # still growing
        assert watcher.ready() == []
        now[0] += 6
        assert watcher.ready() == [str(path)]

    def test_a_taken_file_comes_back_only_when_it_changes(self, tmp_path: Path) -> None:
        """Once taken with its signature a file is not offered again until it changes."""
        now = [time.time() + 60]
        path = write(tmp_path / "a.jsonl", "a")
        watcher = Watcher([str(tmp_path)], str(tmp_path / "x.db"), settle=5, clock=lambda: now[0])
        [ready] = watcher.ready()
        signature = watcher.signature(ready)
        assert signature is not None
        watcher.taken[ready] = signature
        assert watcher.ready() == []
        write(path, "a", "b")
        now[0] += 120
        assert watcher.ready() == [], "changed: it settles first"
        now[0] += 10
        assert watcher.ready() == [str(path)]

    def test_an_empty_or_missing_landing_folder_is_waited_for(self, tmp_path: Path) -> None:
        """A folder or glob that holds nothing yet is no error while watching."""
        watcher = Watcher([str(tmp_path / "later" / "*.gz")], str(tmp_path / "x.db"), settle=0)
        assert watcher.ready() == []


def test_watch_loads_each_content_once(db: str, tmp_path: Path) -> None:
    """A new watch counts what was loaded, under any name, without a run and loads only what is
    new."""
    folder = tmp_path / "landing"
    folder.mkdir()
    write(folder / "a.jsonl", "a")
    runs: list[RunSummary] = []
    first = watch(
        [str(folder)], db, interval=0.01, settle=0, on_file=runs.append, stop=lambda: len(runs) >= 1
    )
    assert [r.loaded for r in first] == [1]
    (folder / "b-copy.jsonl").write_bytes((folder / "a.jsonl").read_bytes())
    write(folder / "c.jsonl", "c")
    runs.clear()
    started: list[tuple[int, int]] = []
    second = watch(
        [str(folder)],
        db,
        interval=0.01,
        settle=0,
        on_file=runs.append,
        on_start=lambda *counts: started.append(counts),
        stop=lambda: len(runs) >= 1,
    )
    assert started == [(3, 2)]
    assert [(Path(r.source or "").name, r.loaded) for r in second] == [("c.jsonl", 1)]
    assert fetch(db, "SELECT COUNT(*) FROM files") == [(2,)]
    assert fetch(db, "SELECT COUNT(*) FROM run_log") == [(2,)]


def settled_folder(folder: Path, count: int) -> list[Path]:
    """`count` files last modified an hour ago, as a landing folder's older deliveries are."""
    folder.mkdir()
    paths = [write(folder / f"day-{n:02d}.jsonl", f"k{n}") for n in range(count)]
    hour_ago = time.time() - 3600
    for path in paths:
        os.utime(path, (hour_ago, hour_ago))
    return paths


class TestStart:
    def test_a_restart_recognises_loaded_files_by_stat_alone(
        self, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Files whose path, size and mtime match the manifest are counted as loaded at start:
        no run, no run-log row, not even a read of their bytes."""
        folder = tmp_path / "landing"
        settled_folder(folder, 5)
        run_many([str(folder)], db)
        hashed: list[str] = []

        def fingerprint(path: str) -> str:
            hashed.append(path)
            return ""

        monkeypatch.setattr(capstone.watch, "fingerprint", fingerprint)
        started: list[tuple[int, int]] = []
        done = watch(
            [str(folder)],
            db,
            interval=0.01,
            settle=0,
            on_start=lambda *counts: started.append(counts),
            stop=lambda: bool(started),
        )
        assert (started, done, hashed) == ([(5, 5)], [], [])
        assert fetch(db, "SELECT COUNT(*) FROM run_log") == [(5,)]

    def test_a_file_modified_just_before_its_load_is_hashed(self, db: str, tmp_path: Path) -> None:
        """A file whose mtime is not well before its load (written just then, or stamped ahead by
        a skewed clock) might have changed again within one mtime tick: at start it is
        recognised by its hash, not its stat."""
        folder = tmp_path / "landing"
        folder.mkdir()
        path = write(folder / "fresh.jsonl", "a")
        ahead = time.time() + 60  # deterministic: never 2 s before the load, however slow it is
        os.utime(path, (ahead, ahead))
        run_many([str(folder)], db)
        stat = path.stat()
        with open_store(db) as store:
            [loaded] = store.files()
            assert not unchanged_since_load(str(path), stat, loaded)
            assert already_loaded(store, "events", str(path), stat)

    def test_a_changed_file_at_start_loads_saying_so(self, db: str, tmp_path: Path) -> None:
        """A file whose content changed while the watch was down loads at start as changed."""
        folder = tmp_path / "landing"
        paths = settled_folder(folder, 3)
        first = run_many([str(folder)], db)
        write(paths[1], "k1", "extra")
        runs: list[RunSummary] = []
        started: list[tuple[int, int]] = []
        watch(
            [str(folder)],
            db,
            interval=0.01,
            settle=0,
            on_file=runs.append,
            on_start=lambda *counts: started.append(counts),
            stop=lambda: len(runs) >= 1,
        )
        assert started == [(3, 2)]
        assert [(r.changed_since, r.loaded) for r in runs] == [(first.runs[1].run_id, 1)]


@pytest.mark.slow
def test_watch_takes_a_slow_file_after_it_settles_and_stops_on_sigterm(tmp_path: Path) -> None:
    """A file written in two parts loads whole once settled; SIGTERM exits 130, runs kept."""
    folder, db = tmp_path / "landing", str(tmp_path / "w.db")
    folder.mkdir()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "capstone",
            "watch",
            str(folder),
            "--db",
            db,
            "--interval",
            "1s",
            "--settle",
            "1s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        slow = folder / "slow.jsonl"
        write(slow, "a")
        time.sleep(0.5)
        write(slow, "a", "b")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not Path(db).exists():
            time.sleep(0.1)
        while time.monotonic() < deadline:
            if fetch(db, "SELECT COUNT(*) FROM files") == [(1,)]:
                break
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert b"stopped" in err
    assert b"2 in, 2 loaded" in out
    assert fetch(db, "SELECT records FROM files") == [(2,)]


@pytest.mark.slow
def test_watch_starts_with_one_line_for_the_files_it_knows(tmp_path: Path) -> None:
    """`capstone watch` on a folder it loaded before prints one start line, then runs only the
    new file: a restart adds one run, not one per known file."""
    folder, db = tmp_path / "landing", str(tmp_path / "w.db")
    settled_folder(folder, 3)
    run_many([str(folder)], db)
    write(folder / "new.jsonl", "new")
    process = subprocess.Popen(
        [sys.executable, "-m", "capstone", "watch", str(folder), "--db", db, "--interval", "1s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ | {"COLUMNS": "200"},
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and fetch(db, "SELECT COUNT(*) FROM files") != [(4,)]:
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 130, err
    lines = out.decode().splitlines()
    assert lines[0] == "watching 4 files (3 already loaded)"
    assert len(lines) == 2
    assert "new.jsonl: success, 1 in, 1 loaded" in lines[1]
    assert fetch(db, "SELECT COUNT(*) FROM run_log") == [(4,)]
