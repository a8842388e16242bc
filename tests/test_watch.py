"""Watch mode: files are taken once settled, each once per content, and SIGTERM stops cleanly."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from capstone.summary import RunSummary
from capstone.watch import Watcher, watch
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
    """A new watch skips what was loaded, under any name, and loads only what is new."""
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
    second = watch(
        [str(folder)], db, interval=0.01, settle=0, on_file=runs.append, stop=lambda: len(runs) >= 3
    )
    assert [r.same_content_as for r in second] == [first[0].run_id, first[0].run_id, None]
    assert [r.loaded for r in second] == [0, 0, 1]
    assert fetch(db, "SELECT COUNT(*) FROM files") == [(2,)]


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
