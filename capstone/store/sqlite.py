"""SQLite backend: the embedded default. One file, WAL journal, one writer at a time.

What is SQLite's own: the file and its pragmas, `BEGIN IMMEDIATE` as the lock (SQLite allows one
writer), runs found abandoned by their process id, staging in the connection's temporary database,
and a merge that relies on SQLite applying an INSERT ... SELECT's rows in the SELECT's order.
"""

import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from capstone.errors import LockError, MissingDatabase, StoreError
from capstone.fates import TIES_BEFORE, TS_US, Merged, StagedRow
from capstone.lineage import STEP_CODES
from capstone.spec import PipelineSpec
from capstone.store.checkpoint import Checkpointer, background_checkpoints
from capstone.store.ddl import core_tables, later_migrations, pipeline_tables, run_reasons_table
from capstone.store.guard import gone, guard, holds, ties_before
from capstone.store.sql import Dialect, SqlRun, SqlStore, column_definitions
from capstone.store.tables import quote
from capstone.summary import RunSummary

__all__ = ["SQLiteStore"]

DIALECT = Dialect(
    words={
        "text": "TEXT",
        "bigint": "INTEGER",
        "int": "INTEGER",
        "real": "REAL",
        "bool": "INTEGER",
        "ts": "TEXT",
        "json": "TEXT",
        "counter_pk": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "serial_pk": "INTEGER PRIMARY KEY",
        "row_id": "INTEGER PRIMARY KEY",
        "table_options": " WITHOUT ROWID",
    },
    named=":{}",
    find="instr",
    list_of="SELECT value FROM json_each(:{name})",
    error=sqlite3.Error,
    unlimited=-1,
    # CROSS JOIN keeps SQLite from scanning lineage instead of seeking its index once per run.
    join_in_order="CROSS JOIN",
    same="IS",  # IS NOT DISTINCT FROM only since SQLite 3.39
    # Whole seconds through the date functions (floored, also before 1970), the fraction apart:
    # exact where a float would round.
    micros_text="(strftime('%Y-%m-%dT%H:%M:%S', ({0} - (({0} % 1000000 + 1000000) % 1000000)) "
    "/ 1000000, 'unixepoch') || CASE WHEN {0} % 1000000 = 0 THEN '' "
    "ELSE printf('.%06d', ({0} % 1000000 + 1000000) % 1000000) END)",
    text_micros="(CAST(strftime('%s', substr({0}, 1, 19)) AS INTEGER) * 1000000 + "
    "CASE WHEN length({0}) > 19 THEN CAST(substr({0}, 21) AS INTEGER) ELSE 0 END)",
    lineage_rebuilt="CREATE INDEX lineage_run_key ON lineage_records (run_id, key)",
)

MIGRATIONS: list[tuple[str, str]] = [
    ("core tables", core_tables(DIALECT)),
    (
        "dead-letter replay, reject reasons per run, lineage by key",
        "ALTER TABLE dead_letters ADD COLUMN record TEXT;"
        + run_reasons_table(DIALECT)
        + "; CREATE INDEX lineage_key ON lineage (key)",
    ),
    (
        "pipelines: stored definitions, schema changes, per-run staging",
        # Databases of the first versions staged in a table of their own.
        pipeline_tables(DIALECT) + "; DROP TABLE IF EXISTS staging",
    ),
    (
        "lineage by run, then key: a run appends to the index instead of scattering over it",
        "DROP INDEX lineage_key; CREATE INDEX lineage_run_key ON lineage (run_id, key)",
    ),
]
MIGRATIONS += later_migrations(DIALECT)


def _null(value: None) -> None:
    return value


# sqlite3 binds None only after looking for an adapter, and not finding one means probing None
# for __adapt__ and __conform__: about a microsecond per parameter, which made binding the empty
# `attributes` of every staged record cost 5% of a load. Registering NoneType's identity adapter
# turns that into one dictionary hit; None still binds as NULL.
sqlite3.register_adapter(type(None), _null)


_KNOWN_ERRORS: tuple[tuple[tuple[str, ...], type[StoreError], str], ...] = (
    (
        ("file is not a database",),
        StoreError,
        "{path} is not a SQLite database; point --db at a capstone database or a new file",
    ),
    (
        ("readonly",),
        StoreError,
        "{path} is read-only; make the file and its folder writable or use another --db",
    ),
    (
        ("disk is full", "disk I/O error"),
        StoreError,
        "writing {path} failed ({text}); free disk space and run again, nothing was changed",
    ),
    (
        ("unable to open",),
        StoreError,
        "cannot open database {path}; check that its folder exists and is writable",
    ),
    (
        ("already exists",),
        StoreError,
        "{path} holds tables capstone did not create ({text}); point --db at a capstone "
        "database or a new file",
    ),
    (
        ("locked", "busy"),
        LockError,
        "database {path} is locked by another process; wait for it or raise --lock-timeout",
    ),
)
"""What sqlite3's messages say, and the line capstone gives instead (the first match wins)."""


_BEFORE_ALL = "-9223372036854775808"
"""Microseconds before every event time: what a record with nothing before it has to beat."""

_POLL_SECONDS = 0.05
"""How often a run waiting for another live run to end looks again."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SQLiteRun(SqlRun):
    """One run's writes inside the transaction `SQLiteStore.run_transaction` opened."""

    store: "SQLiteStore"

    def __init__(self, store: "SQLiteStore", run: RunSummary, spec: PipelineSpec) -> None:
        super().__init__(store, run, spec)
        self.conn = store.conn
        self.staged = 0
        self.behind = 0
        columns = column_definitions(spec, DIALECT.types, not_null=False)
        key = ", _lineage_key TEXT NOT NULL" if self.layout.own_lineage_key else ""
        key += f", {TS_US} INTEGER NOT NULL"
        # Staging lives in the connection's temporary database: it is this run's alone, and its
        # pages never go through the WAL of the main file.
        self._record_columns = (
            f"position INTEGER NOT NULL, {', '.join(columns)}, attributes TEXT{key}"
        )
        self.conn.execute("DROP TABLE IF EXISTS temp.staging")
        self.conn.execute(
            f"CREATE TEMP TABLE staging (seq INTEGER PRIMARY KEY, {self._record_columns})"
        )
        names = ", ".join(quote(n) for n in self.layout.names)
        marks = ", ".join("?" * len(self.layout.names))
        self._insert = f"INSERT INTO temp.staging ({names}) VALUES ({marks})"

    def stage(self, rows: Sequence[StagedRow], behind: int = 0) -> None:
        self.conn.executemany(self._insert, rows)
        self.staged += len(rows)
        self.behind += behind

    def merge(self, skip_through: str | None, watermark: str | None) -> Merged:
        spec = self.spec
        table, ts = quote(spec.target), quote(spec.event_time)
        lineage_key = f"s.{quote(self.layout.lineage_key_column)}"
        partition = ", ".join(f"s.{quote(k)}" for k in spec.key)
        joined = " AND ".join(f"t.{quote(k)} = s.{quote(k)}" for k in spec.key)
        params = {"run": self.run.run_id, "skip": skip_through, "watermark": watermark}
        wins, deletes = guard(spec), spec.delete_field is not None
        # A pipeline with tombstones also compares each record with its key's tombstone `d`.
        tombstone = (
            f"LEFT JOIN main.{quote(spec.tombstones)} AS d ON "
            + " AND ".join(f"d.{quote(k)} = s.{quote(k)}" for k in spec.key)
            if deletes
            else ""
        )
        # The stored row's (or tombstone's) event time in microseconds, below every event time
        # when there is none: the merge compares integers, not text (0.3 s of a 1M-record
        # merge). Both orders agree: canonical timestamp text compares in time order.
        stored_text = f"COALESCE(t.{ts}, d.{ts})" if deletes else f"t.{ts}"
        stored = (
            f"CASE WHEN {stored_text} IS NULL THEN {_BEFORE_ALL} "
            f"ELSE {DIALECT.text_micros.format(stored_text)} END"
        )
        # With no staged record behind the watermark (a first load, a feed on time) nothing can
        # be covered or late, and the statements below leave those tests out.
        behind = bool(self.behind and watermark)
        skipped = (
            self._skip_covered(table, ts, lineage_key, joined, tombstone, params) if behind else 0
        )
        applied = f"us {wins} before_us"
        late_when = f"WHEN {applied} AND ts <= :watermark" if behind else ""
        late_detail = (
            f"{late_when} THEN 'late: ' || ts || ' behind watermark ' || :watermark"
            if behind
            else ""
        )
        load, stale, delete = (STEP_CODES[step] for step in ("load", "stale", "delete"))
        first_id = self._last_lineage_id()
        self._order_staging()
        # 1. Lineage, before the target changes. A staged record is applied when its event time
        #    beats everything before it for its key: the stored row (or tombstone) and every
        #    earlier staged record (`before_us`, one window pass over microseconds). Each record
        #    gets one row: its fate, `load` (`delete` for a tombstone) or `stale`, which implies
        #    its `stage` step (the `lineage` view). A loaded record's detail is its event time,
        #    stored as microseconds (`ts`, detail NULL); a stale one's names the time that beat
        #    it, written back as text. `temp.ordered` hands rows on in key order, so they append
        #    to the lineage (run_id, key) index (only speed relies on that).
        before = self.conn.total_changes
        # The run id goes in as a literal (an int from the run log): bound as :run, SQLite read
        # the parameter again for each of a million rows (0.3 s of a 1M-record merge).
        self.conn.execute(
            f"""
            INSERT INTO lineage_records (run_id, step, key, position, ts, detail)
            SELECT {int(self.run.run_id)},
                   CASE WHEN NOT ({applied}) THEN {stale} WHEN gone THEN {delete} ELSE {load} END,
                   key, position,
                   CASE {late_when + " THEN NULL" if behind else ""} WHEN {applied} THEN us END,
                   CASE {late_detail}
                        WHEN {applied} THEN NULL
                        ELSE 'kept ts ' || {DIALECT.micros_text.format("before_us")}
                             || ' over ' || ts END
            FROM (
                SELECT {lineage_key} AS key, s.position, s.{ts} AS ts, s.{TS_US} AS us,
                       {gone(spec)} AS gone,
                       MAX({stored}, COALESCE(MAX(s.{TS_US}) OVER (
                           PARTITION BY {partition} ORDER BY s.seq
                           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), {_BEFORE_ALL})
                       ) AS before_us
                FROM temp.ordered AS s LEFT JOIN main.{table} AS t ON {joined} {tombstone}
            )
            """,
            params,
        )
        # Each row stands for two steps: the record's `stage` and its fate (the `lineage` view).
        self.lineage_entries += 2 * (self.conn.total_changes - before)
        before = self.conn.total_changes
        # 2. The target. SQLite applies the rows of one INSERT ... SELECT in the SELECT's order,
        #    so feeding staging in input order through the strict guard is, by construction,
        #    applying records one by one (`wins` is the pipeline's tie rule: > keeps the stored
        #    row on a tie, >= replaces it); a refused update changes nothing, so the change count
        #    is `loaded`. Ordering by key first keeps each key's records in input order and walks
        #    the target's key index once, front to back. (PostgreSQL cannot update a row twice
        #    in one statement: its backend upserts one winner per key instead.)
        columns = ", ".join(quote(c) for c in spec.columns)
        order = ", ".join(quote(k) for k in spec.key)
        updates = ", ".join(
            f"{quote(c)} = excluded.{quote(c)}" for c in spec.columns if c not in spec.key
        )
        # A tombstone goes in as a row with its delete field true, so that later records of its
        # key compare with it; `_keep_tombstones` then moves such rows to the tombstone table.
        # A record is never applied over an older tombstone of an earlier run.
        beats_tombstone = (
            f"NOT EXISTS (SELECT 1 FROM main.{quote(spec.tombstones)} AS d WHERE "
            + " AND ".join(f"d.{quote(k)} = s.{quote(k)}" for k in spec.key)
            + f" AND NOT (s.{ts} {wins} d.{ts}))"
            if deletes
            else "true"
        )
        self.conn.execute(
            f"""
            INSERT INTO main.{table} ({columns}, attributes, run_id)
            SELECT {columns}, attributes, {int(self.run.run_id)}
            FROM temp.ordered AS s WHERE {beats_tombstone}
            ORDER BY {order}, seq
            ON CONFLICT ({", ".join(quote(k) for k in spec.key)}) DO UPDATE SET
                {updates}, attributes = excluded.attributes, run_id = excluded.run_id
            WHERE excluded.{ts} {wins} {table}.{ts}
            """,
            params,
        )
        loaded = self.conn.total_changes - before
        late = deleted = 0
        if deletes:
            self._keep_tombstones(params)
            deleted = self._count_lineage(first_id, f"step = {delete}")
        if behind:
            late = self._count_lineage(
                first_id, f"step IN ({load}, {delete}) AND detail LIKE 'late: %'"
            )
        self.conn.execute("DELETE FROM temp.staging")
        # Emptied first: DELETE frees a table's pages wholesale, while a DROP of the full sorted
        # copy took 0.1 to 0.6 s of a 1M-record run here (0.03 s for DELETE, then DROP).
        self.conn.execute("DELETE FROM temp.ordered")
        self.conn.execute("DROP TABLE temp.ordered")
        staged = self.staged - skipped
        self.staged = self.behind = 0
        return Merged(
            loaded=loaded, stale=staged - loaded, skipped=skipped, late=late, deleted=deleted
        )

    def _order_staging(self) -> None:
        """Copy staging into `temp.ordered`, clustered on (key, seq): one sort, which both the
        lineage statement's window and the upsert then read in order (each sorted staging on
        its own before, and the two sorts cost more than this copy)."""
        keys = ", ".join(quote(k) for k in self.spec.key)
        self.conn.execute("DROP TABLE IF EXISTS temp.ordered")
        self.conn.execute(
            f"CREATE TEMP TABLE ordered (seq INTEGER NOT NULL, {self._record_columns}, "
            f"PRIMARY KEY ({keys}, seq)) WITHOUT ROWID"
        )
        self.conn.execute(
            f"INSERT INTO temp.ordered SELECT * FROM temp.staging ORDER BY {keys}, seq"
        )

    def _count_lineage(self, after_id: int, condition: str) -> int:
        """Rows the merge's lineage statement wrote (ids after `after_id`) that meet `condition`."""
        row = self.conn.execute(
            f"SELECT COUNT(*) FROM lineage_records WHERE id > ? AND {condition}", (after_id,)
        ).fetchone()
        return int(row[0])

    def _keep_tombstones(self, params: dict[str, Any]) -> None:
        """Move this run's tombstone rows from the target to the tombstone table, and drop the
        tombstones of keys this run brought back."""
        spec = self.spec
        table, tombstones = f"main.{quote(spec.target)}", f"main.{quote(spec.tombstones)}"
        keys = ", ".join(quote(k) for k in spec.key)
        ts, marker = quote(spec.event_time), quote(spec.delete_field or "")
        removed = (
            f"({keys}) IN (SELECT {keys} FROM temp.staging WHERE COALESCE({marker}, FALSE)) "
            f"AND COALESCE({marker}, FALSE) AND run_id = :run"
        )
        self.conn.execute(
            f"INSERT INTO {tombstones} ({keys}, {ts}, run_id) "
            f"SELECT {keys}, {ts}, run_id FROM {table} WHERE {removed} "
            f"ON CONFLICT ({keys}) DO UPDATE SET {ts} = excluded.{ts}, run_id = excluded.run_id",
            params,
        )
        self.conn.execute(f"DELETE FROM {table} WHERE {removed}", params)
        self.conn.execute(
            f"DELETE FROM {tombstones} WHERE ({keys}) IN (SELECT {keys} FROM {table} "
            f"WHERE run_id = :run AND ({keys}) IN (SELECT {keys} FROM temp.staging))",
            params,
        )

    def _skip_covered(
        self,
        table: str,
        ts: str,
        lineage_key: str,
        joined: str,
        tombstone: str,
        params: dict[str, Any],
    ) -> int:
        """Take the records an earlier run had out of staging, with one `skip` lineage row each:
        behind the skip line, their key is in the target at the same or a later event time.

        Such a record can change nothing: the guard would refuse it (or, replacing ties, write
        the same row again, unless an earlier record of this run with the same time replaced the
        row first: `holds` leaves such records to the merge), and no later record of its key
        compares against it (the stored time is at least as new). Removing it first keeps a
        rerun from paying for the merge of records it only needed to recognise.
        """
        if params["skip"] is None:
            return 0
        spec = self.spec
        staged, earlier_ties = "temp.staging", "0"
        if spec.ties == "replace":
            keys = ", ".join(quote(k) for k in spec.key)
            staged = f"(SELECT *, {ties_before(keys, ts, 'seq')} AS {TIES_BEFORE} FROM {staged})"
            earlier_ties = f"s.{TIES_BEFORE}"
        self.conn.execute("DROP TABLE IF EXISTS temp.covered")
        self.conn.execute(
            f"CREATE TEMP TABLE covered AS SELECT s.seq, {lineage_key} AS key, s.position, "
            f"s.{TS_US} AS us FROM {staged} AS s "
            f"{'LEFT ' if tombstone else ''}JOIN main.{table} AS t ON {joined} {tombstone} "
            f"WHERE s.{ts} <= :skip AND {holds(spec, DIALECT, earlier_ties=earlier_ties)}",
            params,
        )
        before = self.conn.total_changes
        self.conn.execute(
            "INSERT INTO lineage_records (run_id, step, key, position, ts) "
            f"SELECT :run, {STEP_CODES['skip']}, key, position, us FROM temp.covered",
            params,
        )
        skipped = int(self.conn.total_changes - before)
        self.lineage_entries += skipped
        self.conn.execute("DELETE FROM temp.staging WHERE seq IN (SELECT seq FROM temp.covered)")
        self.conn.execute("DROP TABLE temp.covered")
        return skipped

    def _last_lineage_id(self) -> int:
        row = self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM lineage_records").fetchone()
        return int(row[0])


class SQLiteStore(SqlStore):
    """A capstone database in one SQLite file."""

    migrations = MIGRATIONS
    dialect = DIALECT
    run_class = SQLiteRun

    def __init__(self, path: str, *, create: bool = True) -> None:
        self.path = path
        self._checkpointer: Checkpointer | None = None
        self.display_url = path
        if Path(path).is_dir():
            raise StoreError(
                f"database {path} is a folder; point --db at a file (a new one is created)"
            )
        if not create and not Path(path).exists():
            raise MissingDatabase(
                f"database {path} does not exist; run `capstone run` first or check --db"
            )
        with self._translate():
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
            # A large sort (the merge's copy of staging in key order) may hand part of its work to
            # a second thread: by then a run's forked reader has ended, and its core is free.
            self.conn.execute("PRAGMA threads = 1")
            self._migrate()
            self._mark_abandoned()

    def _where(self) -> str:
        return self.path

    def _space(self) -> tuple[int | None, int | None]:
        # The file's pages, and those on its free list: a DELETE frees pages for later writes;
        # only a vacuum returns them to the disk.
        page = int(self.conn.execute("PRAGMA page_size").fetchone()[0])
        pages = int(self.conn.execute("PRAGMA page_count").fetchone()[0])
        free = int(self.conn.execute("PRAGMA freelist_count").fetchone()[0])
        return pages * page, free * page

    def _give_back(self, vacuum: bool) -> None:
        if vacuum:
            # Rewrites the whole file (and needs as much free disk for the copy).
            self.conn.execute("VACUUM")
        elif int(self.conn.execute("PRAGMA auto_vacuum").fetchone()[0]) == 2:
            # A database made with auto_vacuum = INCREMENTAL returns its free pages cheaply;
            # capstone does not make them so, since the pointer pages would slow every run.
            self.conn.execute("PRAGMA incremental_vacuum")

    def dataset(self, table: str) -> tuple[str, str]:
        return f"sqlite:{os.path.abspath(self.path)}", table

    def _store_error(self, error: Exception) -> StoreError:
        text = str(error)
        for clues, kind, message in _KNOWN_ERRORS:
            if any(clue in text for clue in clues):
                return kind(message.format(path=self.path, text=text))
        return StoreError(f"database {self.path}: {text}")

    def _run_many(self, statement: str, rows: Sequence[Any]) -> int:
        return int(self.conn.executemany(statement, rows).rowcount)

    def _bulk(self, table: str, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> None:
        marks = ", ".join("?" * len(columns))
        self.conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)

    def _table(self, name: str) -> str:
        return f"main.{quote(name)}"

    @contextmanager
    def feed(self) -> Iterator[None]:
        with background_checkpoints(self.conn, self.path) as checkpointer:
            self._checkpointer = checkpointer
            try:
                yield
            finally:
                self._checkpointer = None

    def _committed(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.wake()

    def _table_exists(self, name: str) -> bool:
        row = self._one(
            "SELECT 1 FROM sqlite_master WHERE lower(name) = lower(:name)", {"name": name}
        )
        return row is not None

    def _in_transaction(self) -> bool:
        return bool(self.conn.in_transaction)

    def _mark_abandoned(self) -> None:
        """A `running` row of this host whose process is gone belongs to a run that was killed."""
        host = socket.gethostname()
        for row in self._all("SELECT run_id, host, pid FROM run_log WHERE status = 'running'"):
            if row["host"] == host and row["pid"] != os.getpid() and not _pid_alive(row["pid"]):
                self._abandon(row["run_id"])

    def _begin_migration(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def _begin_write(self, pipeline: str, lock_timeout: float) -> None:
        # A run logs its start only while no other live run is logged: SQLite has one writer,
        # so a second run that logged its start could not mark it failed while the first one
        # writes, and it would read `running` until its process was found dead. The write lock
        # alone is not enough: the first run releases it between logging its start and opening
        # its run transaction, and the second one could take it in that gap.
        deadline = time.monotonic() + lock_timeout
        while True:
            self._begin_immediate(pipeline, None, max(0.0, deadline - time.monotonic()))
            live = self._live_run()
            if live is None:
                return
            self._rollback()
            if time.monotonic() >= deadline:
                raise LockError(self._lock_message(pipeline, None))
            time.sleep(min(_POLL_SECONDS, max(0.0, deadline - time.monotonic())))

    def _live_run(self) -> int | None:
        """The id of a `running` row whose process (on this host, not this one) is alive."""
        host = socket.gethostname()
        for row in self._all("SELECT run_id, host, pid FROM run_log WHERE status = 'running'"):
            if row["host"] == host and row["pid"] != os.getpid() and _pid_alive(row["pid"]):
                return int(row["run_id"])
        return None

    @contextmanager
    def _locked(self, pipeline: str, lock_timeout: float, own_run: int | None) -> Iterator[None]:
        self._begin_immediate(pipeline, own_run, lock_timeout)
        try:
            yield
        finally:
            # On error, or when the caller left without committing: nothing commits. Some errors
            # (a full disk, for one) make SQLite roll back on its own already.
            self._rollback()

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
        other = self._one(
            "SELECT run_id, pipeline FROM run_log WHERE status = 'running' AND run_id != :own "
            "ORDER BY pipeline = :pipeline DESC, run_id LIMIT 1",
            {"own": own_run or 0, "pipeline": pipeline},
        )
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
