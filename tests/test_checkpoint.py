"""A SQLite feed's checkpoints on a thread of their own: commits leave their pages in the WAL and
the thread copies them into the database file while the next run works."""

import sqlite3
import threading
import time
from pathlib import Path

from capstone import RunOptions
from capstone.pipeline import run_many
from capstone.store.checkpoint import background_checkpoints
from tests.conftest import fetch
from tests.test_readahead import mixed_feed


def wal_database(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE t (n INTEGER, pad TEXT)")
    return conn


def test_a_commit_leaves_its_pages_to_the_thread(tmp_path: Path) -> None:
    """With checkpoints aside, a large commit stays in the WAL (the database file keeps its
    size) until the thread, woken, copies it in."""
    path = tmp_path / "db.sqlite"
    conn = wal_database(path)
    with background_checkpoints(conn, str(path)) as checkpointer:
        before = path.stat().st_size
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t VALUES (?, ?)", ((n, "x" * 200) for n in range(20_000)))
        conn.execute("COMMIT")
        assert path.stat().st_size == before, "the COMMIT checkpointed by itself"
        checkpointer.wake()
        deadline = time.monotonic() + 10
        while path.stat().st_size == before:
            assert time.monotonic() < deadline, "the thread never checkpointed"
            time.sleep(0.01)
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)
    conn.close()
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM t").fetchone() == (20_000,)


def test_the_thread_ends_with_the_block(tmp_path: Path) -> None:
    """Leaving the block stops the thread, also when the block raised."""
    path = tmp_path / "db.sqlite"
    conn = wal_database(path)
    try:
        with background_checkpoints(conn, str(path)):
            assert "capstone-checkpoints" in {t.name for t in threading.enumerate()}
            raise KeyError("a run failed")
    except KeyError:
        pass
    assert "capstone-checkpoints" not in {t.name for t in threading.enumerate()}
    conn.close()


def test_a_feed_with_checkpoints_aside_keeps_every_run(tmp_path: Path) -> None:
    """Three files, each its own commit and checkpoint: every record is in the database file
    after the feed (the WAL is gone with the last connection), and no thread is left."""
    folder = tmp_path / "landing"
    folder.mkdir()
    for name, count in (("a", 2_000), ("b", 2_100), ("c", 2_200)):
        mixed_feed(folder / f"{name}.jsonl.gz", count)
    db = str(tmp_path / "feed.db")
    feed = run_many([str(folder)], db, RunOptions(batch_size=256))
    assert [run.status for run in feed.runs] == ["success"] * 3
    assert fetch(db, "SELECT COUNT(*) FROM files") == [(3,)]
    assert "capstone-checkpoints" not in {t.name for t in threading.enumerate()}
    assert not Path(db + "-wal").exists()
    lineage = sum(run.lineage_entries for run in feed.runs)
    assert fetch(db, "SELECT COUNT(*) FROM lineage") == [(lineage,)]
    loaded = fetch(db, "SELECT SUM(loaded) FROM run_log")[0][0]
    assert loaded == sum(run.loaded for run in feed.runs) > 0
