"""SQLite backend: the embedded default. One file, WAL journal, one writer at a time."""

import os
import socket
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from capstone.classify import Rejected, Screen, Skipped, Staged
from capstone.errors import LockError, MissingDatabase, StoreError
from capstone.schema import FieldType, PipelineSpec
from capstone.store.base import (
    check_watermark,
    iter_steps,
    not_replayed,
    refuse_foreign,
    sightings,
)
from capstone.store.tables import TableSync, quote, sync_plan
from capstone.summary import DeadLetter, LineageEntry, RunStatus, RunSummary, StepCount
from capstone.timeutil import format_ts, utcnow

SQL_TYPES: dict[FieldType, str] = {
    "string": "TEXT",
    "integer": "INTEGER",
    "float": "REAL",
    "boolean": "INTEGER",
    "timestamp": "TEXT",  # canonical ISO text: text order is time order
    "json": "TEXT",
}

__all__ = ["SQLiteStore"]


def _null(value: None) -> None:
    return value


# sqlite3 binds None only after looking for an adapter, and not finding one means probing None
# for __adapt__ and __conform__: about a microsecond per parameter, which made binding the empty
# `attributes` of every staged record cost 5% of a load. Registering NoneType's identity adapter
# turns that into one dictionary hit; None still binds as NULL.
sqlite3.register_adapter(type(None), _null)

MIGRATIONS: list[tuple[str, str]] = [
    (
        "core tables",
        """
        CREATE TABLE run_log (
            run_id INTEGER PRIMARY KEY AUTOINCREMENT,
            pipeline TEXT NOT NULL,
            status TEXT NOT NULL,
            source TEXT,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            duration_ms INTEGER NOT NULL DEFAULT 0,
            input_records INTEGER NOT NULL DEFAULT 0,
            staged INTEGER NOT NULL DEFAULT 0,
            loaded INTEGER NOT NULL DEFAULT 0,
            stale INTEGER NOT NULL DEFAULT 0,
            rejected INTEGER NOT NULL DEFAULT 0,
            skipped INTEGER NOT NULL DEFAULT 0,
            dead_letters INTEGER NOT NULL DEFAULT 0,
            lineage_entries INTEGER NOT NULL DEFAULT 0,
            watermark_before TEXT,
            watermark_after TEXT,
            error TEXT,
            host TEXT,
            pid INTEGER
        );
        CREATE INDEX run_log_running ON run_log (pipeline) WHERE status = 'running';
        CREATE TABLE run_steps (
            run_id INTEGER NOT NULL REFERENCES run_log (run_id),
            step TEXT NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (run_id, step)
        ) WITHOUT ROWID;
        CREATE TABLE watermarks (
            name TEXT PRIMARY KEY,
            value TEXT,
            run_id INTEGER,
            updated_at TEXT
        );
        CREATE TABLE staging (
            seq INTEGER PRIMARY KEY,
            position INTEGER NOT NULL,
            key TEXT NOT NULL,
            name TEXT NOT NULL,
            value REAL NOT NULL,
            ts TEXT NOT NULL,
            attributes TEXT
        );
        CREATE TABLE target (
            key TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            value REAL NOT NULL,
            ts TEXT NOT NULL,
            attributes TEXT,
            run_id INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE dead_letters (
            id INTEGER PRIMARY KEY,
            pipeline TEXT NOT NULL,
            run_id INTEGER NOT NULL,
            last_run_id INTEGER NOT NULL,
            times_seen INTEGER NOT NULL DEFAULT 1,
            position INTEGER NOT NULL,
            key TEXT,
            reason TEXT NOT NULL,
            message TEXT NOT NULL,
            raw TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            resolved_run_id INTEGER,
            UNIQUE (pipeline, fingerprint)
        );
        CREATE INDEX dead_letters_run ON dead_letters (run_id);
        CREATE TABLE lineage (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL,
            step TEXT NOT NULL,
            key TEXT,
            position INTEGER NOT NULL,
            detail TEXT
        );
        """,
    ),
    (
        "dead-letter replay, reject reasons per run, lineage by key",
        """
        ALTER TABLE dead_letters ADD COLUMN record TEXT;
        CREATE TABLE run_reasons (
            run_id INTEGER NOT NULL REFERENCES run_log (run_id),
            reason TEXT NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (run_id, reason)
        ) WITHOUT ROWID;
        CREATE INDEX lineage_key ON lineage (key);
        """,
    ),
    (
        "pipelines: stored definitions, schema changes, per-run staging",
        """
        CREATE TABLE pipeline_schemas (
            pipeline TEXT PRIMARY KEY,
            target TEXT NOT NULL UNIQUE,
            definition TEXT NOT NULL,
            version INTEGER NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE schema_changes (
            id INTEGER PRIMARY KEY,
            pipeline TEXT NOT NULL,
            version INTEGER NOT NULL,
            change TEXT NOT NULL,
            run_id INTEGER,
            applied_at TEXT NOT NULL
        );
        DROP TABLE staging;
        """,
    ),
    (
        "lineage by run, then key: a run appends to the index instead of scattering over it",
        """
        DROP INDEX lineage_key;
        CREATE INDEX lineage_run_key ON lineage (run_id, key);
        """,
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)


def _host() -> str:
    return socket.gethostname()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def _translate(path: str) -> Iterator[None]:
    """Turn sqlite3 errors into one-line StoreErrors that name the fix."""
    try:
        yield
    except sqlite3.Error as error:
        text = str(error)
        if "file is not a database" in text:
            raise StoreError(
                f"{path} is not a SQLite database; point --db at a capstone database or a new file"
            ) from None
        if "readonly" in text:
            raise StoreError(
                f"{path} is read-only; make the file and its folder writable or use another --db"
            ) from None
        if "disk is full" in text or "disk I/O error" in text:
            raise StoreError(
                f"writing {path} failed ({text}); free disk space and run again, nothing was changed"
            ) from None
        if "unable to open" in text:
            raise StoreError(
                f"cannot open database {path}; check that its folder exists and is writable"
            ) from None
        if "locked" in text or "busy" in text:
            raise LockError(
                f"database {path} is locked by another process; wait for it or raise --lock-timeout"
            ) from None
        raise StoreError(f"database {path}: {text}") from None


def _dead_letter(row: sqlite3.Row) -> DeadLetter:
    data: dict[str, Any] = dict(row)
    data.pop("fingerprint")
    data["record"] = None if data["record"] is None else orjson.loads(data["record"])
    return DeadLetter.model_validate(data)


def _row_to_summary(row: sqlite3.Row) -> RunSummary:
    data = dict(row)
    data["watermark"] = data.pop("watermark_after")
    data.pop("host", None)
    data.pop("pid", None)
    return RunSummary.model_validate(data)


class SQLiteStore:
    """A capstone database in one SQLite file."""

    def __init__(self, path: str, *, create: bool = True) -> None:
        self.path = path
        self.display_url = path
        if not create and not Path(path).exists():
            raise MissingDatabase(
                f"database {path} does not exist; run `capstone run` first or check --db"
            )
        with _translate(path):
            self.conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
            self.conn.row_factory = sqlite3.Row
            # Small pages keep an incremental run's cost with its batch: each new or updated key
            # dirties one target page, and COMMIT writes every dirty page to the WAL. With 64 KiB
            # pages, 10k keys into a 5M-row target wrote 229 MB of WAL (36 MB with 4 KiB). It
            # takes effect only on a new file, before WAL mode fixes the page size.
            self.conn.execute("PRAGMA page_size = 4096")
            self.conn.execute("PRAGMA journal_mode = WAL")
            # NORMAL in WAL mode keeps every commit atomic; a power cut may lose the last commit,
            # never half of it.
            self.conn.execute("PRAGMA synchronous = NORMAL")
            # 32 MiB of page cache; a sort may take as much again before it spills. Together they
            # set capstone's memory ceiling, whatever the size of the input.
            self.conn.execute("PRAGMA cache_size = -32768")
            # Sorts for the merge spill to temporary files, so memory stays flat as runs grow.
            self.conn.execute("PRAGMA temp_store = FILE")
            self._migrate()
            self._mark_abandoned()

    # -- schema -------------------------------------------------------------------------------

    def _schema_version(self) -> int:
        exists = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        ).fetchone()
        if not exists:
            return 0
        return int(
            self.conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] or 0
        )

    def _migrate(self) -> None:
        version = self._schema_version()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer capstone (schema {version}, this one knows "
                f"{SCHEMA_VERSION}); upgrade capstone to use it"
            )
        if version == SCHEMA_VERSION:
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            version = self._schema_version()  # another process may have migrated meanwhile
            for number, (name, script) in enumerate(MIGRATIONS, 1):
                if number <= version:
                    continue
                for statement in script.split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
                self.conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (number, name, format_ts(utcnow())),
                )
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def _mark_abandoned(self) -> None:
        """A `running` row whose process is gone belongs to a run that was killed."""
        rows = self.conn.execute(
            "SELECT run_id, host, pid FROM run_log WHERE status = 'running'"
        ).fetchall()
        dead = [
            row["run_id"]
            for row in rows
            if row["host"] == _host() and row["pid"] != os.getpid() and not _pid_alive(row["pid"])
        ]
        if dead:
            self.conn.executemany(
                "UPDATE run_log SET status = ?, error = ?, finished_at = ? "
                "WHERE run_id = ? AND status = 'running'",
                [
                    (
                        RunStatus.ABANDONED,
                        "the process died before the run finished; nothing it wrote was kept",
                        format_ts(utcnow()),
                        run_id,
                    )
                    for run_id in dead
                ],
            )

    # -- runs ---------------------------------------------------------------------------------

    def begin_run(self, pipeline: str, source: str, lock_timeout: float = 5.0) -> RunSummary:
        started = format_ts(utcnow())
        with _translate(self.path):
            # Only a run that holds the write lock logs its start, so two runs started at once
            # cannot both log one: the loser could not mark its row failed while the winner
            # writes, and it would read `running` until its process was found dead.
            # run_transaction takes the lock again at once.
            self._begin_immediate(pipeline, None, lock_timeout)
            try:
                cursor = self.conn.execute(
                    "INSERT INTO run_log (pipeline, status, source, started_at, host, pid) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (pipeline, RunStatus.RUNNING, source, started, _host(), os.getpid()),
                )
                self.conn.execute("COMMIT")
            finally:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
        assert cursor.lastrowid is not None
        return RunSummary(
            run_id=cursor.lastrowid,
            pipeline=pipeline,
            status=RunStatus.RUNNING,
            source=source,
            started_at=started,
        )

    # -- pipelines ----------------------------------------------------------------------------

    def _table_sync(self, spec: PipelineSpec) -> TableSync:
        stored = self.conn.execute(
            "SELECT definition FROM pipeline_schemas WHERE pipeline = ?", (spec.name,)
        ).fetchone()
        owner = self.conn.execute(
            "SELECT pipeline FROM pipeline_schemas WHERE lower(target) = lower(?)", (spec.target,)
        ).fetchone()
        exists = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE lower(name) = lower(?)", (spec.target,)
        ).fetchone()
        return sync_plan(
            spec,
            None if stored is None else stored[0],
            target_exists=exists is not None,
            target_owner=None if owner is None else owner[0],
        )

    def check_pipeline(self, spec: PipelineSpec) -> None:
        with _translate(self.path):
            self._table_sync(spec)

    def pipeline_version(self, pipeline: str) -> tuple[str, int] | None:
        with _translate(self.path):
            row = self.conn.execute(
                "SELECT target, version FROM pipeline_schemas WHERE pipeline = ?", (pipeline,)
            ).fetchone()
        return None if row is None else (row[0], row[1])

    def _apply(self, spec: PipelineSpec, run_id: int) -> None:
        """Create or migrate the target table, inside the run's transaction."""
        sync = self._table_sync(spec)
        if not sync.changes:
            return
        table = quote(spec.target)
        if sync.create:
            columns = [
                f"{quote(name)} {SQL_TYPES[f.type]}"
                + (" NOT NULL" if name in spec.key or name == spec.event_time else "")
                for name, f in spec.fields.items()
            ]
            keys = ", ".join(quote(k) for k in spec.key)
            self.conn.execute(
                f"CREATE TABLE {table} ({', '.join(columns)}, attributes TEXT, "
                f"run_id INTEGER NOT NULL, PRIMARY KEY ({keys})) WITHOUT ROWID"
            )
        for name in sync.add:
            self.conn.execute(
                f"ALTER TABLE {table} ADD COLUMN {quote(name)} {SQL_TYPES[spec.fields[name].type]}"
            )
        if sync.clear_watermark:
            self.conn.execute("DELETE FROM watermarks WHERE name = ?", (spec.name,))
        now = format_ts(utcnow())
        version = self.conn.execute(
            "INSERT INTO pipeline_schemas (pipeline, target, definition, version, updated_at) "
            "VALUES (?, ?, ?, 1, ?) ON CONFLICT (pipeline) DO UPDATE SET target = excluded.target, "
            "definition = excluded.definition, version = version + 1, "
            "updated_at = excluded.updated_at RETURNING version",
            (spec.name, spec.target, spec.definition(), now),
        ).fetchone()[0]
        self.conn.executemany(
            "INSERT INTO schema_changes (pipeline, version, change, run_id, applied_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [(spec.name, version, change, run_id, now) for change in sync.changes],
        )

    @contextmanager
    def run_transaction(
        self, run: RunSummary, lock_timeout: float, spec: PipelineSpec
    ) -> Iterator["_SQLiteRun"]:
        with _translate(self.path):
            self._begin_immediate(run.pipeline, run.run_id, lock_timeout)
            try:
                self._apply(spec, run.run_id)
                yield _SQLiteRun(self.conn, run, spec)
            finally:
                # On error, or when the caller left without finish(): nothing commits. Some errors
                # (a full disk, for one) make SQLite roll back on its own already.
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")

    def _begin_immediate(self, pipeline: str, own_run: int | None, lock_timeout: float) -> None:
        """Take the database's write lock (SQLite's one writer), waiting up to `lock_timeout`."""
        self.conn.execute(f"PRAGMA busy_timeout = {int(lock_timeout * 1000)}")
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise
            # The writer holding the lock may be a run of this pipeline: name it.
            raise LockError(self._lock_message(pipeline, own_run)) from None

    def _lock_message(self, pipeline: str, own_run: int | None) -> str:
        other = self.conn.execute(
            "SELECT run_id, pipeline FROM run_log WHERE status = 'running' AND run_id != ? "
            "ORDER BY pipeline = ? DESC, run_id LIMIT 1",
            (own_run or 0, pipeline),
        ).fetchone()
        if other is not None and other["pipeline"] == pipeline:
            return (
                f"another run of pipeline {pipeline!r} is in progress (run {other['run_id']}); "
                "wait for it to finish or raise --lock-timeout"
            )
        holder = (
            f"run {other['run_id']} of pipeline {other['pipeline']!r}"
            if other
            else "another process"
        )
        return (
            f"database {self.path} is busy: {holder} is writing to it (SQLite allows one writer); "
            "wait for it to finish or raise --lock-timeout"
        )

    def end_run(self, run: RunSummary) -> None:
        with _translate(self.path):
            self.conn.execute(
                "UPDATE run_log SET status = ?, finished_at = ?, duration_ms = ?, error = ?, "
                "watermark_before = ?, watermark_after = ? WHERE run_id = ? "
                # A run that committed stays as it committed, whatever interrupts it later.
                "AND status = 'running'",
                (
                    run.status,
                    run.finished_at,
                    run.duration_ms,
                    run.error,
                    run.watermark_before,
                    run.watermark,
                    run.run_id,
                ),
            )

    def runs(
        self, limit: int | None = None, pipeline: str | None = None, unsuccessful: bool = False
    ) -> list[RunSummary]:
        with _translate(self.path):
            rows = self.conn.execute(
                "SELECT * FROM run_log WHERE (:pipeline IS NULL OR pipeline = :pipeline) "
                "AND (NOT :unsuccessful OR status NOT IN ('success', 'running')) "
                "ORDER BY run_id DESC LIMIT :limit",
                {
                    "pipeline": pipeline,
                    "unsuccessful": unsuccessful,
                    "limit": -1 if limit is None else limit,
                },
            ).fetchall()
        return [_row_to_summary(row) for row in rows]

    def get_run(self, run_id: int) -> RunSummary | None:
        with _translate(self.path):
            row = self.conn.execute("SELECT * FROM run_log WHERE run_id = ?", (run_id,)).fetchone()
        return _row_to_summary(row) if row else None

    def step_counts(
        self, run_id: int | None = None, pipeline: str | None = None
    ) -> list[StepCount]:
        with _translate(self.path):
            rows = self.conn.execute(
                "SELECT step, SUM(count) AS count FROM run_steps AS s "
                "WHERE (:run IS NULL OR run_id = :run) AND (:pipeline IS NULL OR EXISTS "
                "(SELECT 1 FROM run_log AS r WHERE r.run_id = s.run_id AND r.pipeline = :pipeline)) "
                "GROUP BY step",
                {"run": run_id, "pipeline": pipeline},
            ).fetchall()
        return [StepCount(step=row["step"], count=row["count"]) for row in rows]

    def reject_reasons(self, run_id: int) -> dict[str, int]:
        with _translate(self.path):
            rows = self.conn.execute(
                "SELECT reason, count FROM run_reasons WHERE run_id = ? ORDER BY count DESC, reason",
                (run_id,),
            ).fetchall()
        return {row["reason"]: row["count"] for row in rows}

    def dead_letters(
        self,
        *,
        pipeline: str | None = None,
        reason: str | None = None,
        run_id: int | None = None,
        limit: int | None = None,
        include_resolved: bool = False,
    ) -> list[DeadLetter]:
        with _translate(self.path):
            rows = self.conn.execute(
                "SELECT * FROM dead_letters WHERE (:pipeline IS NULL OR pipeline = :pipeline) "
                "AND (:reason IS NULL OR instr(reason, :reason) > 0) "
                "AND (:run IS NULL OR run_id = :run) "
                "AND (:resolved OR resolved_run_id IS NULL) ORDER BY id LIMIT :limit",
                {
                    "pipeline": pipeline,
                    "reason": reason,
                    "run": run_id,
                    "resolved": include_resolved,
                    "limit": -1 if limit is None else limit,
                },
            ).fetchall()
        return [_dead_letter(row) for row in rows]

    def dead_letter_counts(self, reason: str | None = None) -> dict[str, int]:
        with _translate(self.path):
            rows = self.conn.execute(
                "SELECT pipeline, COUNT(*) AS n FROM dead_letters WHERE resolved_run_id IS NULL "
                "AND (:reason IS NULL OR instr(reason, :reason) > 0) GROUP BY pipeline",
                {"reason": reason},
            ).fetchall()
        return {row["pipeline"]: row["n"] for row in rows}

    def lineage(self, key: str, pipeline: str | None = None) -> list[LineageEntry]:
        with _translate(self.path):
            # One index seek per run: CROSS JOIN keeps SQLite from scanning lineage instead.
            rows = self.conn.execute(
                "SELECT l.run_id, r.pipeline, r.source, r.started_at, l.step, l.key, l.position, "
                "l.detail FROM run_log AS r CROSS JOIN lineage AS l "
                "ON l.run_id = r.run_id AND l.key = ? "
                "WHERE ? IS NULL OR r.pipeline = ? ORDER BY l.run_id, l.position, l.id",
                (key, pipeline, pipeline),
            ).fetchall()
        return [LineageEntry.model_validate(dict(row)) for row in rows]

    def get_watermark(self, pipeline: str) -> str | None:
        with _translate(self.path):
            row = self.conn.execute(
                "SELECT value FROM watermarks WHERE name = ?", (pipeline,)
            ).fetchone()
        return None if row is None else row["value"]

    def set_watermark(self, pipeline: str, value: str | None) -> None:
        with _translate(self.path):
            self.conn.execute(
                "INSERT INTO watermarks (name, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at, run_id = NULL",
                (pipeline, value, format_ts(utcnow())),
            )

    def reset_watermark(
        self, pipeline: str, value: str | None, *, expected: str | None, lock_timeout: float
    ) -> None:
        with _translate(self.path):
            self._begin_immediate(pipeline, None, lock_timeout)
            try:
                check_watermark(pipeline, self.get_watermark(pipeline), expected)
                self.set_watermark(pipeline, value)
                self.conn.execute("COMMIT")
            finally:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()


class _SQLiteRun:
    """One run's writes inside the transaction `SQLiteStore.run_transaction` opened."""

    screen: Screen | None = None  # SQLite stores any text

    def __init__(self, conn: sqlite3.Connection, run: RunSummary, spec: PipelineSpec) -> None:
        self.conn = conn
        self.run = run
        self.spec = spec
        self.staged = 0
        columns = [f"{quote(name)} {SQL_TYPES[f.type]}" for name, f in spec.fields.items()]
        if not spec.text_key:
            columns.append("_lineage_key TEXT NOT NULL")
        # Staging lives in the connection's temporary database: it is this run's alone, and its
        # pages never go through the WAL of the main file.
        conn.execute("DROP TABLE IF EXISTS temp.staging")
        conn.execute(
            "CREATE TEMP TABLE staging (seq INTEGER PRIMARY KEY, position INTEGER NOT NULL, "
            f"{', '.join(columns[: len(spec.fields)])}, attributes TEXT"
            + "".join(f", {c}" for c in columns[len(spec.fields) :])
            + ")"
        )
        names = [quote(n) for n in spec.columns]
        self._insert = (
            f"INSERT INTO temp.staging (seq, position, {', '.join(names)}, attributes"
            + ("" if spec.text_key else ", _lineage_key")
            + f") VALUES ({', '.join('?' * (len(names) + 3 + (not spec.text_key)))})"
        )

    def read_watermark(self) -> str | None:
        row = self.conn.execute(
            "SELECT value FROM watermarks WHERE name = ?", (self.run.pipeline,)
        ).fetchone()
        return None if row is None else row[0]

    def stage(self, rows: Sequence[Staged]) -> None:
        self.conn.executemany(self._insert, rows)
        self.staged += len(rows)

    def _refresh_letter(self, r: Rejected) -> int:
        # A record that parses now (the text was half fixed) is kept: the next export offers it
        # for the rest of the fix. The raw text and fingerprint stay the original's.
        return self.conn.execute(
            "UPDATE dead_letters SET last_run_id = ?, times_seen = times_seen + 1, reason = ?, "
            "message = ?, record = COALESCE(?, record), key = COALESCE(?, key), "
            "resolved_run_id = NULL WHERE id = ? AND pipeline = ?",
            (
                self.run.run_id,
                r.codes,
                r.message,
                r.record_json,
                r.key,
                r.replayed,
                self.run.pipeline,
            ),
        ).rowcount

    def _refuse_foreign(self, ids: Sequence[int]) -> None:
        if ids:
            row = self.conn.execute(
                "SELECT id, pipeline FROM dead_letters WHERE pipeline != ? "
                "AND id IN (SELECT value FROM json_each(?)) LIMIT 1",
                (self.run.pipeline, orjson.dumps(list(ids)).decode()),
            ).fetchone()
            refuse_foreign(self.run.pipeline, None if row is None else (row[0], row[1]))

    def reject(self, rows: Sequence[Rejected]) -> int:
        run_id, pipeline = self.run.run_id, self.run.pipeline
        self._refuse_foreign([r.replayed for r in rows if r.replayed is not None])
        lineage = [(run_id, r.key, r.position, r.codes) for r in rows]
        seen = sightings(not_replayed(rows, self._refresh_letter))
        # Seen before (in an earlier run or batch): keep one dead letter, count the sightings,
        # take today's reasons. One a replay had resolved is open again: the record came back.
        self.conn.executemany(
            "UPDATE dead_letters SET last_run_id = ?, times_seen = times_seen + ?, "
            "reason = ?, message = ?, resolved_run_id = NULL WHERE pipeline = ? AND fingerprint = ?",
            [(run_id, n, r.codes, r.message, pipeline, r.fingerprint) for r, n in seen],
        )
        before = self.conn.total_changes
        self.conn.executemany(
            "INSERT INTO dead_letters (pipeline, run_id, last_run_id, times_seen, position, key, "
            "reason, message, raw, fingerprint, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (pipeline, fingerprint) DO NOTHING",
            [
                (
                    pipeline,
                    run_id,
                    run_id,
                    n,
                    r.position,
                    r.key,
                    r.codes,
                    r.message,
                    r.raw,
                    r.fingerprint,
                    r.record_json,
                )
                for r, n in seen
            ],
        )
        new = self.conn.total_changes - before
        self.conn.executemany(
            "INSERT INTO lineage (run_id, step, key, position, detail) VALUES (?, 'reject', ?, ?, ?)",
            lineage,
        )
        return new

    def skip(self, rows: Sequence[Skipped]) -> None:
        self.conn.executemany(
            "INSERT INTO lineage (run_id, step, key, position, detail) VALUES (?, 'skip', ?, ?, ?)",
            [(self.run.run_id, key, position, f"ts {ts}") for position, key, ts in rows],
        )

    def merge(self) -> tuple[int, int]:
        run_id, spec = self.run.run_id, self.spec
        table, ts = quote(spec.target), quote(spec.event_time)
        lineage_key = f"s.{quote(spec.key[0])}" if spec.text_key else "s._lineage_key"
        partition = ", ".join(f"s.{quote(k)}" for k in spec.key)
        joined = " AND ".join(f"t.{quote(k)} = s.{quote(k)}" for k in spec.key)
        # 1. Lineage, before the target changes. A staged record is applied when its event time
        #    is strictly newer than everything before it for its key: the stored row and every
        #    earlier staged record (`newest_before`, one window pass). Each record gets its
        #    `stage` row and its `load` or `stale` row. The window's sort hands rows on in key
        #    order, so they append to the lineage (run_id, key) index (only speed relies on it).
        self.conn.execute(
            f"""
            INSERT INTO lineage (run_id, step, key, position, detail)
            SELECT ?1,
                   CASE WHEN f.stage THEN 'stage' WHEN applied THEN 'load' ELSE 'stale' END,
                   key, position,
                   CASE WHEN f.stage THEN NULL
                        WHEN applied THEN 'ts ' || ts
                        ELSE 'kept ts ' || newest_before || ' over ' || ts END
            FROM (
                SELECT key, position, ts, ts > newest_before AS applied, newest_before
                FROM (
                    SELECT {lineage_key} AS key, s.position, s.{ts} AS ts,
                           MAX(COALESCE(t.{ts}, ''), COALESCE(MAX(s.{ts}) OVER (
                               PARTITION BY {partition} ORDER BY s.seq
                               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), '')
                           ) AS newest_before
                    FROM temp.staging AS s LEFT JOIN main.{table} AS t ON {joined}
                )
            ) CROSS JOIN (SELECT 1 AS stage UNION ALL SELECT 0) AS f
            """,
            (run_id,),
        )
        before = self.conn.total_changes
        # 2. The target. SQLite applies the rows of one INSERT ... SELECT in the SELECT's order,
        #    so feeding staging in input order through the strict guard is, by construction,
        #    applying records one by one; a refused update changes nothing, so the change count
        #    is `loaded`. Ordering by key first keeps each key's records in input order and walks
        #    the target's key index once, front to back. (PostgreSQL cannot update a row twice
        #    in one statement: its backend upserts one winner per key instead.)
        columns = ", ".join(quote(c) for c in spec.columns)
        order = ", ".join(quote(k) for k in spec.key)
        updates = ", ".join(
            f"{quote(c)} = excluded.{quote(c)}" for c in spec.columns if c not in spec.key
        )
        self.conn.execute(
            f"""
            INSERT INTO main.{table} ({columns}, attributes, run_id)
            SELECT {columns}, attributes, ?1 FROM temp.staging WHERE true ORDER BY {order}, seq
            ON CONFLICT ({", ".join(quote(k) for k in spec.key)}) DO UPDATE SET
                {updates}, attributes = excluded.attributes, run_id = excluded.run_id
            WHERE excluded.{ts} > {table}.{ts}
            """,
            (run_id,),
        )
        loaded = self.conn.total_changes - before
        self.conn.execute("DELETE FROM temp.staging")
        staged, self.staged = self.staged, 0
        return int(loaded), staged - int(loaded)

    def replay_candidates(self, reason: str | None, ids: Sequence[int] | None) -> list[DeadLetter]:
        rows = self.conn.execute(
            "SELECT * FROM dead_letters WHERE pipeline = ? AND resolved_run_id IS NULL "
            "AND (? IS NULL OR instr(reason, ?) > 0) ORDER BY id",
            (self.run.pipeline, reason, reason),
        ).fetchall()
        wanted = None if ids is None else set(ids)
        return [_dead_letter(row) for row in rows if wanted is None or row["id"] in wanted]

    def resolve(self, dead_letter_ids: Sequence[int]) -> None:
        self._refuse_foreign(dead_letter_ids)
        # Not a letter a bad record sighted earlier in this run (its last run is this one): the
        # bad copy keeps it open, whichever came first and however the input was batched.
        run_id = self.run.run_id
        self.conn.executemany(
            "UPDATE dead_letters SET resolved_run_id = ? WHERE id = ? AND pipeline = ? "
            "AND resolved_run_id IS NULL AND last_run_id != ?",
            [(run_id, id_, self.run.pipeline, run_id) for id_ in dead_letter_ids],
        )

    def finish(self, summary: RunSummary, reasons: dict[str, int]) -> None:
        self.conn.executemany(
            "INSERT INTO run_reasons (run_id, reason, count) VALUES (?, ?, ?)",
            [(summary.run_id, reason, count) for reason, count in reasons.items()],
        )
        self.conn.execute(
            "INSERT INTO watermarks (name, value, run_id, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value, run_id = excluded.run_id, "
            "updated_at = excluded.updated_at",
            (summary.pipeline, summary.watermark, summary.run_id, summary.finished_at),
        )
        self.conn.executemany(
            "INSERT INTO run_steps (run_id, step, count) VALUES (?, ?, ?)",
            [(summary.run_id, step, count) for step, count in iter_steps(summary) if count],
        )
        self.conn.execute(
            """
            UPDATE run_log SET status = :status, finished_at = :finished_at,
                duration_ms = :duration_ms, input_records = :input_records, staged = :staged,
                loaded = :loaded, stale = :stale, rejected = :rejected, skipped = :skipped,
                dead_letters = :dead_letters, lineage_entries = :lineage_entries,
                watermark_before = :watermark_before, watermark_after = :watermark, error = NULL
            WHERE run_id = :run_id
            """,
            summary.model_dump(),
        )
        self.conn.execute("COMMIT")
