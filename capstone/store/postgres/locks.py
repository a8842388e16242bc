"""Advisory locks: one run per pipeline at a time, and a lock per run that outlives no session.

A pipeline's lock is held by the session running it; a run's lock is taken in the transaction
that logs the run's start and held until the run ends, so a `running` row whose lock is free
belongs to a session that is gone.
"""

import contextlib
import hashlib

import psycopg
from psycopg import errors

from capstone.errors import LockError
from capstone.store.postgres.connection import Connection

__all__ = ["AdvisoryLocks", "lock_key"]


def lock_key(*parts: str) -> int:
    """A signed 64-bit advisory lock key, stable across processes and machines."""
    digest = hashlib.blake2b("\x1f".join(("capstone", *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class AdvisoryLocks:
    """The session locks of one connection, keyed within one schema."""

    def __init__(self, conn: Connection, schema: str) -> None:
        self.conn = conn
        self.schema = schema

    def run_key(self, run_id: int) -> int:
        return lock_key(self.schema, "run", str(run_id))

    def pipeline_key(self, pipeline: str) -> int:
        return lock_key(self.schema, "pipeline", pipeline)

    def migration_key(self) -> int:
        return lock_key(self.schema, "migrate")

    def try_lock(self, key: int) -> bool:
        row = self.conn.execute("SELECT pg_try_advisory_lock(%s) AS ok", (key,)).fetchone()
        return bool(row and row["ok"])

    def unlock(self, key: int) -> None:
        if not self.conn.closed:
            with contextlib.suppress(psycopg.Error):
                self.conn.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def lock_pipeline(self, pipeline: str, lock_timeout: float, own_run: int = 0) -> int:
        """Take the pipeline's session lock, waiting up to `lock_timeout` seconds."""
        key = self.pipeline_key(pipeline)
        if self.try_lock(key):
            return key
        if lock_timeout > 0:
            timeout = f"{max(1, round(lock_timeout * 1000))}ms"
            self.conn.execute("SELECT set_config('lock_timeout', %s, false)", (timeout,))
            try:
                self.conn.execute("SELECT pg_advisory_lock(%s)", (key,))
                return key
            except errors.LockNotAvailable:
                pass
            finally:
                self.conn.execute("RESET lock_timeout")
        raise LockError(self._message(pipeline, key, own_run))

    def _message(self, pipeline: str, key: int, own_run: int) -> str:
        holder = self.conn.execute(
            """
            SELECT r.run_id FROM pg_locks AS l
            JOIN run_log AS r ON r.backend_pid = l.pid AND r.status = 'running'
            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND l.classid::bigint = (%(key)s::bigint >> 32) & 4294967295
              AND l.objid::bigint = %(key)s::bigint & 4294967295
              AND r.pipeline = %(pipeline)s AND r.run_id <> %(run)s
            ORDER BY r.run_id DESC LIMIT 1
            """,
            {"key": key, "pipeline": pipeline, "run": own_run},
        ).fetchone()
        if holder is None:  # not found through pg_locks (no privilege?): the oldest other run
            holder = self.conn.execute(
                "SELECT run_id FROM run_log WHERE status = 'running' AND pipeline = %s "
                "AND run_id <> %s ORDER BY run_id LIMIT 1",
                (pipeline, own_run),
            ).fetchone()
        who = f"run {holder['run_id']}" if holder else "a session that holds its lock"
        return (
            f"another run of pipeline {pipeline!r} is in progress ({who}); "
            "wait for it to finish or raise --lock-timeout"
        )
