"""Checkpoints of a SQLite feed on a thread of their own.

A commit in WAL mode appends the run's pages to the `-wal` file; a checkpoint copies them into
the database file and syncs it. SQLite runs one inside the COMMIT that passes 1000 pages of WAL,
so in a feed each file's run waited for its own copy (0.12 s a file of 100k records, 12% of a
10-file feed). Here the committing connection leaves that to a second connection on a thread:
it copies the pages while the next file's run reads, stages and merges (SQLite releases the GIL
while it works, and a PASSIVE checkpoint never waits for, nor blocks, the writer).

Nothing about a commit changes: it is whole in the WAL when COMMIT returns, and a crash at any
moment of a checkpoint leaves the database as the WAL says. The WAL may hold two runs' pages
instead of one meanwhile; the last connection to close checkpoints whatever is left.
"""

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

__all__ = ["Checkpointer", "background_checkpoints"]


class Checkpointer:
    """A thread that checkpoints the WAL of the database at `path` each time it is woken."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="capstone-checkpoints", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _work(self) -> None:
        # A checkpoint is an optimisation here: one that cannot run now is left to the next
        # wake, or to the close of the last connection.
        with suppress(sqlite3.Error):
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
            try:
                while True:
                    self._wake.wait()
                    self._wake.clear()
                    if self._stopping:
                        return
                    with suppress(sqlite3.Error):
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            finally:
                conn.close()


@contextmanager
def background_checkpoints(conn: sqlite3.Connection, path: str) -> Iterator[Checkpointer]:
    """While open, `conn`'s commits leave checkpoints to a thread: wake it after each COMMIT."""
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    checkpointer = Checkpointer(path)
    try:
        yield checkpointer
    finally:
        checkpointer.stop()
        conn.execute("PRAGMA wal_autocheckpoint = 1000")
