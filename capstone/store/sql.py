"""The SQL core both backends share: core tables, migrations, run log, reports, dead letters.

A backend subclasses `SqlStore` and `SqlRun` and supplies only what truly differs: its
connection and how its errors read, a `Dialect` (type names, placeholders, a few functions),
locking, bulk writes (executemany or COPY), the staging table and the merge. Statements here are
written once with `:name` parameters; `Dialect.sql` turns them into the driver's style.
"""

import os
import re
import socket
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from functools import cache
from types import TracebackType
from typing import Any, ClassVar, Self, TypeVar, cast

import orjson
from pydantic import BaseModel, ValidationError

from capstone.errors import ConfigError, StoreError
from capstone.fates import Merged, Rejected, Rejects, Screen, Skipped, StagedRow
from capstone.lineage import (
    LINEAGE_COLUMNS,
    LineageEntry,
    LineageRow,
    StepCount,
    iter_steps,
    of_rejects,
    of_skips,
)
from capstone.spec import FieldType, PipelineSpec
from capstone.store.tables import TableSync, quote, sync_plan
from capstone.summary import DeadLetter, RunStatus, RunSummary
from capstone.timeutil import format_ts, utcnow

__all__ = [
    "Dialect",
    "Row",
    "SqlRun",
    "SqlStore",
    "column_definitions",
]

Row = Mapping[str, Any]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Dialect:
    """What differs between the backends' SQL, as data."""

    words: dict[str, str]
    """Type words of the DDL: text, bigint, int, real, bool, ts, json, counter_pk (never reuses
    an id), serial_pk, row_id (an id without an index of its own), table_options."""
    named: str
    """How the driver spells a named parameter, with `{}` for the name."""
    find: str
    """The function (haystack, needle) -> position of a substring, 0 when absent."""
    unlimited: int | None
    """The LIMIT that means no limit."""
    json_param: str
    """How a JSON text parameter becomes the JSON column's type."""
    ts_text: str
    """How a stored timestamp reads as the canonical ISO text capstone writes."""
    list_of: str
    """A subquery of the values in a list parameter `:{name}` of SQL type `{type}` (see
    `SqlStore._list`)."""
    join_in_order: str
    """A join that keeps the planner on the left table first (for the lineage lookup by key)."""
    error: type[Exception]
    """The driver's base exception, turned into a one-line StoreError (`_store_error`)."""

    @property
    def types(self) -> dict[FieldType, str]:
        """Column types of record fields."""
        w = self.words
        return {
            "string": w["text"],
            "integer": w["bigint"],
            "float": w["real"],
            "boolean": w["bool"],
            "timestamp": w["ts"],  # SQLite: canonical ISO text, whose order is time order
            "json": w["json"],
        }

    def sql(self, statement: str) -> str:
        """The statement with `:name` parameters in the driver's spelling."""
        return _translate_params(statement, self.named)


@cache
def _translate_params(statement: str, named: str) -> str:
    if named == ":{}":
        return statement
    escaped = statement.replace("%", "%%")
    return re.sub(r"(?<![:\w]):(\w+)", lambda m: named.format(m.group(1)), escaped)


_RUN = (
    "SELECT run_id, pipeline, status, source, {ts}(started_at) AS started_at, "
    "{ts}(finished_at) AS finished_at, duration_ms, input_records, staged, loaded, late, stale, "
    "rejected, skipped, dead_letters, lineage_entries, {ts}(watermark_before) AS "
    "watermark_before, {ts}(watermark_after) AS watermark, error FROM run_log"
)
_DEAD_LETTER = (
    "SELECT id, pipeline, run_id, last_run_id, times_seen, position, key, reason, message, raw, "
    "CAST(record AS TEXT) AS record, resolved_run_id FROM dead_letters"
)
ABANDONED = "the process died before the run finished; nothing it wrote was kept"


def column_definitions(
    spec: PipelineSpec,
    types: Mapping[FieldType, str],
    *,
    not_null: bool = True,
    event_time_type: str | None = None,
) -> list[str]:
    """The record's column definitions; key and event time NOT NULL unless `not_null` is off."""
    return [
        f"{quote(name)} "
        + (event_time_type if event_time_type and name == spec.event_time else types[f.type])
        + (" NOT NULL" if not_null and (name in spec.key or name == spec.event_time) else "")
        for name, f in spec.fields.items()
    ]


def _stored(model: type[M], table: str, row: Row, *, json: str = "") -> M:
    """A stored row read as `model` (its `json` column parsed); a row that cannot be read, edited
    by hand or damaged, is a StoreError naming the table, the row and what to do."""
    values = dict(row)
    ident = "id" if "id" in values else "run_id"
    try:
        if json and values[json] is not None:
            values[json] = orjson.loads(values[json])
        return model.model_validate(values)
    except orjson.JSONDecodeError:
        column, problem = json, "not JSON"
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        column = ".".join(str(part) for part in first["loc"][:1])
        problem = first["msg"].lower()
    where = f"{ident} = {values.get(ident)}"
    raise StoreError(
        f"the {table} row with {where} cannot be read ({column}: {problem}); it was edited by "
        f"hand or damaged: correct it (UPDATE {table} SET {column} = ... WHERE {where}) or "
        "restore the database from a backup"
    )


def _dead_letter(row: Row) -> DeadLetter:
    # Parsed here, not by the driver: jsonb writes 1e20 as 100000000000000000000, which a driver's
    # parser would turn into an integer no JSON writer here can take.
    return _stored(DeadLetter, "dead_letters", row, json="record")


class SqlStore(ABC):
    """A capstone database: run log, watermarks, lineage, dead letters, target tables.

    A context manager: `with open_store(url) as store:` closes it however the block ends.
    """

    dialect: ClassVar[Dialect]
    run_class: ClassVar[type["SqlRun"]]
    """The run's writer, made inside the transaction `run_transaction` opened."""
    migrations: ClassVar[list[tuple[str, str]]]
    display_url: str
    conn: Any

    # -- what a backend supplies ----------------------------------------------------------------

    @abstractmethod
    def _store_error(self, error: Exception) -> StoreError:
        """A one-line StoreError for a driver error, naming the fix where there is a known one."""

    @abstractmethod
    def _run_many(self, statement: str, rows: Sequence[Any]) -> int:
        """Execute a driver-style statement once per row; returns the rows it changed."""

    @abstractmethod
    def _bulk(self, table: str, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> None:
        """Append rows to a table as fast as the backend can."""

    @abstractmethod
    def _table(self, name: str) -> str:
        """A quoted table of this store, qualified so that a temporary table never shadows it."""

    @abstractmethod
    def _table_exists(self, name: str) -> bool:
        """Whether this store has a table or view of this name, compared without case."""

    @abstractmethod
    def _in_transaction(self) -> bool: ...

    @abstractmethod
    def _begin_write(self, pipeline: str, lock_timeout: float) -> None:
        """Open a transaction that may log a run's start."""

    @abstractmethod
    def _begin_migration(self) -> None:
        """Open the transaction that migrates, serialised with other processes migrating."""

    @abstractmethod
    def _locked(
        self, pipeline: str, lock_timeout: float, own_run: int | None
    ) -> AbstractContextManager[None]:
        """A transaction in which no other run of `pipeline` writes, waiting up to
        `lock_timeout` seconds for it; rolled back unless committed inside."""

    @abstractmethod
    def _mark_abandoned(self) -> None:
        """Mark the `running` rows of runs whose process is gone (see `_abandon`)."""

    @abstractmethod
    def _where(self) -> str:
        """The database as messages name it."""

    def _clean(self, text: str) -> str:
        """Text as the backend can store it (PostgreSQL cannot hold NUL)."""
        return text

    def _json(self, text: str | None) -> str | None:
        """JSON text as the backend's JSON column takes it (None: it cannot)."""
        return text

    def _list(self, values: Sequence[int | str]) -> Any:
        """A list parameter of `Dialect.list_of`."""
        return orjson.dumps(list(values)).decode()

    def _claim_run(self, run_id: int) -> None:
        """Mark a newly logged run as this session's (inside its logging transaction)."""
        return  # SQLite tells live runs by their process id

    def _release_run(self, run_id: int) -> None:
        """The run has ended: undo `_claim_run`."""
        return

    def _table_change(
        self, spec: PipelineSpec, lock_timeout: float
    ) -> AbstractContextManager[None]:
        """Around a change of the target table (PostgreSQL bounds its wait for readers)."""
        return nullcontext()

    # -- plumbing -------------------------------------------------------------------------------

    def _run(self, statement: str, params: Mapping[str, Any] | Sequence[Any] = ()) -> Any:
        return self.conn.execute(self.dialect.sql(statement), params)

    def _one(self, statement: str, params: Mapping[str, Any] = {}) -> Row | None:
        return cast(Row | None, self._run(statement, params).fetchone())

    def _all(self, statement: str, params: Mapping[str, Any] = {}) -> list[Row]:
        return cast(list[Row], self._run(statement, params).fetchall())

    def _many(self, statement: str, rows: Sequence[Mapping[str, Any]]) -> int:
        return self._run_many(self.dialect.sql(statement), rows) if rows else 0

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except self.dialect.error as error:
            raise self._store_error(error) from None

    def _rollback(self) -> None:
        if self._in_transaction():
            self.conn.execute("ROLLBACK")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the connection."""
        self.conn.close()

    # -- schema ---------------------------------------------------------------------------------

    def _schema_version(self) -> int:
        if not self._table_exists("schema_migrations"):
            return 0
        row = self._one("SELECT MAX(version) AS version FROM schema_migrations")
        return int(row["version"] or 0) if row else 0

    def _refuse_newer(self, version: int) -> None:
        if version > len(self.migrations):
            raise StoreError(
                f"{self._where()} was written by a newer capstone (schema {version}, this one "
                f"knows {len(self.migrations)}); upgrade capstone to use it"
            )

    def _migrate(self) -> None:
        """Apply the migrations this database lacks, in one transaction; refuse a newer one."""
        version = self._schema_version()
        self._refuse_newer(version)
        if version == len(self.migrations):
            return
        w = self.dialect.words
        self._begin_migration()
        try:
            self.conn.execute(
                f"CREATE TABLE IF NOT EXISTS schema_migrations (version {w['int']} PRIMARY KEY, "
                f"name {w['text']} NOT NULL, applied_at {w['ts']} NOT NULL)"
            )
            version = self._schema_version()  # another process may have migrated meanwhile
            self._refuse_newer(version)
            for number, (name, script) in enumerate(self.migrations, 1):
                if number <= version:
                    continue
                for statement in script.split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
                self._run(
                    "INSERT INTO schema_migrations (version, name, applied_at) "
                    "VALUES (:version, :name, :at)",
                    {"version": number, "name": name, "at": format_ts(utcnow())},
                )
            self.conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _abandon(self, run_id: int) -> None:
        self._run(
            "UPDATE run_log SET status = :status, error = :error, finished_at = :at "
            "WHERE run_id = :run AND status = 'running'",
            {
                "status": RunStatus.ABANDONED,
                "error": ABANDONED,
                "at": format_ts(utcnow()),
                "run": run_id,
            },
        )

    # -- runs -----------------------------------------------------------------------------------

    def begin_run(self, pipeline: str, source: str, lock_timeout: float = 5.0) -> RunSummary:
        """Record a `running` row (committed at once) and return it; waits at most
        `lock_timeout` seconds for the database to accept the write."""
        started = format_ts(utcnow())
        with self._translate():
            self._begin_write(pipeline, lock_timeout)
            try:
                row = self._one(
                    "INSERT INTO run_log (pipeline, status, source, started_at, host, pid) "
                    "VALUES (:pipeline, :status, :source, :started, :host, :pid) RETURNING run_id",
                    {
                        "pipeline": pipeline,
                        "status": RunStatus.RUNNING,
                        "source": self._clean(source),
                        "started": started,
                        "host": socket.gethostname(),
                        "pid": os.getpid(),
                    },
                )
                assert row is not None
                run_id = int(row["run_id"])
                self._claim_run(run_id)
                self.conn.execute("COMMIT")
            finally:
                self._rollback()
        return RunSummary(
            run_id=run_id,
            pipeline=pipeline,
            status=RunStatus.RUNNING,
            source=source,
            started_at=started,
        )

    @contextmanager
    def run_transaction(
        self, run: RunSummary, lock_timeout: float, spec: PipelineSpec
    ) -> Iterator["SqlRun"]:
        """Take the pipeline's lock and open the run's transaction, creating or migrating the
        target table to `spec` (recorded in `schema_changes`); rolls back on any error."""
        with self._translate(), self._locked(run.pipeline, lock_timeout, run.run_id):
            # Under the pipeline's lock, so two runs never migrate the same table.
            self._apply(spec, run.run_id, lock_timeout)
            yield self.run_class(self, run, spec)

    def end_run(self, run: RunSummary) -> None:
        """Record a run that did not succeed (failed, interrupted) in its own transaction."""
        try:
            with self._translate():
                self._run(
                    "UPDATE run_log SET status = :status, finished_at = :finished, "
                    "duration_ms = :duration, error = :error, watermark_before = :before, "
                    "watermark_after = :after WHERE run_id = :run "
                    # A run that committed stays as it committed, whatever interrupts it later.
                    "AND status = 'running'",
                    {
                        "status": run.status,
                        "finished": run.finished_at,
                        "duration": run.duration_ms,
                        "error": None if run.error is None else self._clean(run.error),
                        "before": run.watermark_before,
                        "after": run.watermark,
                        "run": run.run_id,
                    },
                )
        finally:
            self._release_run(run.run_id)

    # -- pipelines ------------------------------------------------------------------------------

    def _table_sync(self, spec: PipelineSpec) -> TableSync:
        stored = self._one(
            "SELECT definition FROM pipeline_schemas WHERE pipeline = :pipeline",
            {"pipeline": spec.name},
        )
        # Names compare without case, on every backend: a configuration means the same on all.
        owner = self._one(
            "SELECT pipeline FROM pipeline_schemas WHERE lower(target) = lower(:target) LIMIT 1",
            {"target": spec.target},
        )
        return sync_plan(
            spec,
            None if stored is None else stored["definition"],
            target_exists=self._table_exists(spec.target),
            target_owner=None if owner is None else owner["pipeline"],
        )

    def check_pipeline(self, spec: PipelineSpec) -> None:
        """Raise ConfigError when the pipeline's target table cannot take `spec` (read only)."""
        with self._translate():
            self._table_sync(spec)

    def pipeline_version(self, pipeline: str) -> tuple[str, int] | None:
        """(target table, definition version) stored for a pipeline, or None before its first run."""
        with self._translate():
            row = self._one(
                "SELECT target, version FROM pipeline_schemas WHERE pipeline = :pipeline",
                {"pipeline": pipeline},
            )
        return None if row is None else (row["target"], int(row["version"]))

    def _apply(self, spec: PipelineSpec, run_id: int, lock_timeout: float) -> None:
        """Create or migrate the target table, inside the run's transaction."""
        sync = self._table_sync(spec)
        if not sync.changes:
            return
        with self._table_change(spec, lock_timeout):
            self._change_table(spec, sync, run_id)

    def _change_table(self, spec: PipelineSpec, sync: TableSync, run_id: int) -> None:
        table, types, words = self._table(spec.target), self.dialect.types, self.dialect.words
        if sync.create:
            columns = column_definitions(spec, types)
            keys = ", ".join(quote(k) for k in spec.key)
            self.conn.execute(
                f"CREATE TABLE {table} ({', '.join(columns)}, attributes {types['json']}, "
                f"run_id {words['bigint']} NOT NULL, PRIMARY KEY ({keys})){words['table_options']}"
            )
        for name in sync.add:
            self.conn.execute(
                f"ALTER TABLE {table} ADD COLUMN {quote(name)} {types[spec.fields[name].type]}"
            )
        if sync.clear_watermark:
            self._run("DELETE FROM watermarks WHERE name = :name", {"name": spec.name})
        now = format_ts(utcnow())
        row = self._one(
            "INSERT INTO pipeline_schemas AS p (pipeline, target, definition, version, updated_at) "
            "VALUES (:pipeline, :target, :definition, 1, :now) ON CONFLICT (pipeline) DO UPDATE "
            "SET target = excluded.target, definition = excluded.definition, "
            "version = p.version + 1, updated_at = excluded.updated_at RETURNING version",
            {
                "pipeline": spec.name,
                "target": spec.target,
                "definition": spec.definition(),
                "now": now,
            },
        )
        assert row is not None
        self._many(
            "INSERT INTO schema_changes (pipeline, version, change, run_id, applied_at) "
            "VALUES (:pipeline, :version, :change, :run, :now)",
            [
                {
                    "pipeline": spec.name,
                    "version": row["version"],
                    "change": c,
                    "run": run_id,
                    "now": now,
                }
                for c in sync.changes
            ],
        )

    # -- reports --------------------------------------------------------------------------------

    def runs(
        self, limit: int | None = None, pipeline: str | None = None, unsuccessful: bool = False
    ) -> list[RunSummary]:
        """Run history, newest first; `unsuccessful` keeps runs that ended without success."""
        with self._translate():
            rows = self._all(
                _RUN.format(ts=self.dialect.ts_text)
                + " WHERE (CAST(:pipeline AS TEXT) IS NULL OR pipeline = :pipeline) "
                "AND (NOT :unsuccessful OR status NOT IN ('success', 'running')) "
                "ORDER BY run_id DESC LIMIT :limit",
                {
                    "pipeline": pipeline,
                    "unsuccessful": unsuccessful,
                    "limit": self.dialect.unlimited if limit is None else limit,
                },
            )
        return [_stored(RunSummary, "run_log", row) for row in rows]

    def get_run(self, run_id: int) -> RunSummary | None:
        """One run, or None."""
        with self._translate():
            row = self._one(
                _RUN.format(ts=self.dialect.ts_text) + " WHERE run_id = :run", {"run": run_id}
            )
        return None if row is None else _stored(RunSummary, "run_log", row)

    def step_counts(
        self, run_id: int | None = None, pipeline: str | None = None
    ) -> list[StepCount]:
        """Lineage rows per step, for one run or all runs (from per-run counts, not a lineage scan)."""
        with self._translate():
            rows = self._all(
                "SELECT step, CAST(SUM(count) AS BIGINT) AS count FROM run_steps AS s "
                "WHERE (CAST(:run AS BIGINT) IS NULL OR run_id = :run) "
                "AND (CAST(:pipeline AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM run_log AS r "
                "WHERE r.run_id = s.run_id AND r.pipeline = :pipeline)) GROUP BY step",
                {"run": run_id, "pipeline": pipeline},
            )
        return [StepCount(step=row["step"], count=row["count"]) for row in rows]

    def reject_reasons(self, run_id: int) -> dict[str, int]:
        """How many records of a run were rejected per reason code."""
        with self._translate():
            rows = self._all(
                "SELECT reason, count FROM run_reasons WHERE run_id = :run "
                "ORDER BY count DESC, reason",
                {"run": run_id},
            )
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
        """Dead letters, oldest first; `reason` matches a substring of the reason codes and
        `run_id` the run that first wrote them."""
        with self._translate():
            rows = self._all(
                f"{_DEAD_LETTER} WHERE (CAST(:pipeline AS TEXT) IS NULL OR pipeline = :pipeline) "
                f"AND (CAST(:reason AS TEXT) IS NULL OR {self.dialect.find}(reason, :reason) > 0) "
                "AND (CAST(:run AS BIGINT) IS NULL OR run_id = :run) "
                "AND (:resolved OR resolved_run_id IS NULL) ORDER BY id LIMIT :limit",
                {
                    "pipeline": pipeline,
                    "reason": reason,
                    "run": run_id,
                    "resolved": include_resolved,
                    "limit": self.dialect.unlimited if limit is None else limit,
                },
            )
        return [_dead_letter(row) for row in rows]

    def dead_letter_counts(self, reason: str | None = None) -> dict[str, int]:
        """Unresolved dead letters per pipeline (`reason` as in `dead_letters`)."""
        with self._translate():
            rows = self._all(
                "SELECT pipeline, COUNT(*) AS n FROM dead_letters WHERE resolved_run_id IS NULL "
                f"AND (CAST(:reason AS TEXT) IS NULL OR {self.dialect.find}(reason, :reason) > 0) "
                "GROUP BY pipeline",
                {"reason": reason},
            )
        return {row["pipeline"]: row["n"] for row in rows}

    def lineage(self, key: str, pipeline: str | None = None) -> list[LineageEntry]:
        """Every lineage row for a key across runs, in run and position order."""
        d = self.dialect
        with self._translate():
            # SQLite: one index seek per run, its lineage index being (run_id, key).
            rows = self._all(
                "SELECT l.id, l.run_id, r.pipeline, r.source, "
                f"{d.ts_text}(r.started_at) AS started_at, l.step, l.key, l.position, l.detail "
                f"FROM run_log AS r {d.join_in_order} lineage AS l "
                "ON l.run_id = r.run_id AND l.key = :key "
                "WHERE CAST(:pipeline AS TEXT) IS NULL OR r.pipeline = :pipeline "
                "ORDER BY l.run_id, l.position, l.id",
                {"key": self._clean(key), "pipeline": pipeline},
            )
        return [_stored(LineageEntry, "lineage", row) for row in rows]

    # -- watermarks -----------------------------------------------------------------------------

    def get_watermark(self, pipeline: str) -> str | None:
        """The stored watermark text of a pipeline."""
        with self._translate():
            row = self._one("SELECT value FROM watermarks WHERE name = :name", {"name": pipeline})
        return None if row is None else row["value"]

    def set_watermark(self, pipeline: str, value: str | None) -> None:
        """Replace (or clear, with None) a pipeline's watermark."""
        with self._translate():
            self._run(
                "INSERT INTO watermarks (name, value, updated_at) VALUES (:name, :value, :at) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at, run_id = NULL",
                {"name": pipeline, "value": value, "at": format_ts(utcnow())},
            )

    def reset_watermark(
        self, pipeline: str, value: str | None, *, expected: str | None, lock_timeout: float
    ) -> None:
        """Replace a pipeline's watermark under the pipeline's lock, so not during a run; raises
        StoreError, changing nothing, if it no longer is `expected` (the value the user saw)."""
        with self._translate(), self._locked(pipeline, lock_timeout, None):
            current = self.get_watermark(pipeline)
            if current != expected:
                raise StoreError(
                    f"the watermark of pipeline {pipeline!r} is now {current or '-'}, not "
                    f"{expected or '-'} as read before the reset (a run ended meanwhile); nothing "
                    "was changed, so run reset-watermark again"
                )
            self.set_watermark(pipeline, value)
            self.conn.execute("COMMIT")


class SqlRun(ABC):
    """Everything one run writes, in one database transaction that commits only in `finish`."""

    screen: Screen | None = None
    """Reasons this backend cannot store a valid record (None: it can store any)."""

    def __init__(self, store: SqlStore, run: RunSummary, spec: PipelineSpec) -> None:
        self.store = store
        self.run = run
        self.spec = spec
        self.layout = spec.staging
        self.lineage_entries = 0
        """Lineage rows this run has written so far."""

    @abstractmethod
    def stage(self, rows: Sequence[StagedRow], behind: int = 0) -> None:
        """Append valid records to the staging table; `behind` of them are at or below the
        watermark (they may be late)."""

    @abstractmethod
    def merge(self, skip_through: str | None, watermark: str | None) -> Merged:
        """Apply staging to the target with the timestamp guard, in input order.

        A staged record at or below `skip_through` whose key the target holds at the same or a
        later event time was had by an earlier run: it is skipped, not staged. Every other record
        is staged, and loads when it is newer than everything before it for its key; a loaded
        record at or below `watermark` is counted late and its lineage says so."""

    def read_watermark(self) -> str | None:
        """The pipeline's stored watermark text, unvalidated (None when there is none)."""
        row = self.store._one(
            "SELECT value FROM watermarks WHERE name = :name", {"name": self.run.pipeline}
        )
        return None if row is None else row["value"]

    def _write_lineage(self, rows: Iterable[LineageRow]) -> None:
        listed = list(rows)
        self.store._bulk("lineage", LINEAGE_COLUMNS, listed)
        self.lineage_entries += len(listed)

    def _refuse_foreign(self, ids: Sequence[int]) -> None:
        """A replay names letters of another pipeline: it was given the wrong --pipeline. Loading
        its records here would file them under this pipeline (or load them into its target)."""
        if not ids:
            return
        row = self.store._one(
            "SELECT id, pipeline FROM dead_letters WHERE pipeline <> :pipeline "
            f"AND id IN ({self.store.dialect.list_of.format(name='ids', type='bigint')}) LIMIT 1",
            {"pipeline": self.run.pipeline, "ids": self.store._list(ids)},
        )
        if row is not None:
            raise ConfigError(
                f"dead letter {row['id']} belongs to pipeline {row['pipeline']!r}, not "
                f"{self.run.pipeline!r}; replay that export with --pipeline {row['pipeline']} "
                "(nothing was changed)"
            )

    def _refresh_letter(self, r: Rejected) -> int:
        # A record that parses now (the text was half fixed) is kept: the next export offers it
        # for the rest of the fix. The raw text and fingerprint stay the original's.
        clean, json_param = self.store._clean, self.store.dialect.json_param
        row = self.store._run(
            "UPDATE dead_letters SET last_run_id = :run, times_seen = times_seen + 1, "
            f"reason = :reason, message = :message, record = COALESCE({json_param}, record), "
            "key = COALESCE(:key, key), resolved_run_id = NULL "
            "WHERE id = :id AND pipeline = :pipeline",
            {
                "run": self.run.run_id,
                "reason": clean(r.codes),
                "message": clean(r.message),
                "record": self.store._json(r.record_json),
                "key": None if r.key is None else clean(r.key),
                "id": r.replayed,
                "pipeline": self.run.pipeline,
            },
        )
        return int(row.rowcount)

    def reject(self, rows: Sequence[Rejected]) -> Rejects:
        """Write dead letters and their lineage. A record behind the watermark whose dead letter
        exists is skipped instead: an earlier run rejected it."""
        run_id, pipeline, store = self.run.run_id, self.run.pipeline, self.store
        clean = store._clean
        known = self._known_letters([r.fingerprint for r in rows if r.behind is not None])
        if known:
            skips = [r for r in rows if r.behind is not None and r.fingerprint in known]
            rows = [r for r in rows if r.behind is None or r.fingerprint not in known]
            self._write_lineage(
                of_skips(run_id, [Skipped(r.position, r.key, r.behind or "") for r in skips], clean)
            )
        self._refuse_foreign([r.replayed for r in rows if r.replayed is not None])
        # A replayed record names the letter it came from: its edited text has another
        # fingerprint, so it refreshes that letter (a resolved one opens again, since its bad
        # record came back). An id that is no letter of this pipeline inserts a new letter.
        fresh = [r for r in rows if r.replayed is None or not self._refresh_letter(r)]
        seen = _sightings(fresh)
        letters = [
            {
                "pipeline": pipeline,
                "run": run_id,
                "seen": n,
                "position": r.position,
                "key": None if r.key is None else clean(r.key),
                "reason": clean(r.codes),
                "message": clean(r.message),
                "raw": clean(r.raw),
                "fingerprint": r.fingerprint,
                "record": store._json(r.record_json),
            }
            for r, n in seen
        ]
        # Seen before (in an earlier run or batch): keep one dead letter, count the sightings,
        # take today's reasons. One a replay had resolved is open again: the record came back.
        store._many(
            "UPDATE dead_letters SET last_run_id = :run, times_seen = times_seen + :seen, "
            "reason = :reason, message = :message, resolved_run_id = NULL "
            "WHERE pipeline = :pipeline AND fingerprint = :fingerprint",
            letters,
        )
        # NOT EXISTS first, so a letter seen before does not use up an id.
        new = store._many(
            "INSERT INTO dead_letters (pipeline, run_id, last_run_id, times_seen, position, key, "
            "reason, message, raw, fingerprint, record) "
            "SELECT :pipeline, :run, :run, :seen, :position, :key, :reason, :message, :raw, "
            f":fingerprint, {store.dialect.json_param} WHERE NOT EXISTS (SELECT 1 FROM "
            "dead_letters WHERE pipeline = :pipeline AND fingerprint = :fingerprint) "
            "ON CONFLICT (pipeline, fingerprint) DO NOTHING",
            letters,
        )
        self._write_lineage(of_rejects(run_id, rows, clean))
        return Rejects(new, list(rows))

    def _known_letters(self, fingerprints: Sequence[str]) -> set[str]:
        """Which of these fingerprints have a dead letter an earlier run of this pipeline wrote."""
        if not fingerprints:
            return set()
        found = self.store._all(
            # Letters this run wrote itself do not count: batching must not change a fate.
            "SELECT fingerprint FROM dead_letters WHERE pipeline = :pipeline AND run_id <> :run "
            "AND fingerprint IN "
            f"({self.store.dialect.list_of.format(name='prints', type='text')})",
            {
                "pipeline": self.run.pipeline,
                "run": self.run.run_id,
                "prints": self.store._list(sorted(set(fingerprints))),
            },
        )
        return {row["fingerprint"] for row in found}

    def replay_candidates(self, reason: str | None, ids: Sequence[int] | None) -> list[DeadLetter]:
        """Unresolved dead letters of this run's pipeline to re-validate (filtered by reason code
        substring and/or ids), oldest first."""
        store = self.store
        rows = store._all(
            f"{_DEAD_LETTER} WHERE pipeline = :pipeline AND resolved_run_id IS NULL "
            f"AND (CAST(:reason AS TEXT) IS NULL OR {store.dialect.find}(reason, :reason) > 0) "
            f"AND (:all OR id IN ({store.dialect.list_of.format(name='ids', type='bigint')})) ORDER BY id",
            {
                "pipeline": self.run.pipeline,
                "reason": reason,
                "all": ids is None,
                "ids": store._list(ids or []),
            },
        )
        return [_dead_letter(row) for row in rows]

    def resolve(self, dead_letter_ids: Sequence[int]) -> None:
        """Mark dead letters resolved by this run (their records were staged)."""
        self._refuse_foreign(dead_letter_ids)
        # Not a letter a bad record sighted earlier in this run (its last run is this one): the
        # bad copy keeps it open, whichever came first and however the input was batched.
        self.store._run(
            "UPDATE dead_letters SET resolved_run_id = :run "
            f"WHERE id IN ({self.store.dialect.list_of.format(name='ids', type='bigint')}) "
            "AND pipeline = :pipeline "
            "AND resolved_run_id IS NULL AND last_run_id <> :run",
            {
                "run": self.run.run_id,
                "ids": self.store._list(dead_letter_ids),
                "pipeline": self.run.pipeline,
            },
        )

    def finish(self, summary: RunSummary, reasons: dict[str, int]) -> None:
        """Store the watermark, the run's success row, its step and reject-reason counts, commit."""
        store, run_id = self.store, summary.run_id
        store._many(
            "INSERT INTO run_reasons (run_id, reason, count) VALUES (:run, :reason, :count)",
            [{"run": run_id, "reason": store._clean(r), "count": n} for r, n in reasons.items()],
        )
        store._run(
            "INSERT INTO watermarks (name, value, run_id, updated_at) "
            "VALUES (:name, :value, :run, :at) ON CONFLICT (name) DO UPDATE SET "
            "value = excluded.value, run_id = excluded.run_id, updated_at = excluded.updated_at",
            {
                "name": summary.pipeline,
                "value": summary.watermark,
                "run": run_id,
                "at": summary.finished_at,
            },
        )
        store._many(
            "INSERT INTO run_steps (run_id, step, count) VALUES (:run, :step, :count)",
            [{"run": run_id, "step": s, "count": n} for s, n in iter_steps(summary) if n],
        )
        store._run(
            """
            UPDATE run_log SET status = :status, finished_at = :finished_at,
                duration_ms = :duration_ms, input_records = :input_records, staged = :staged,
                loaded = :loaded, late = :late, stale = :stale, rejected = :rejected, skipped = :skipped,
                dead_letters = :dead_letters, lineage_entries = :lineage_entries,
                watermark_before = :watermark_before, watermark_after = :watermark, error = NULL
            WHERE run_id = :run_id
            """,
            summary.model_dump(),
        )
        store.conn.execute("COMMIT")
        store._release_run(run_id)


def _sightings(rows: Sequence[Rejected]) -> list[tuple[Rejected, int]]:
    """Each distinct bad record (by fingerprint) once, its first row with how often it came."""
    first: dict[str, Rejected] = {}
    counts: Counter[str] = Counter()
    for r in rows:
        first.setdefault(r.fingerprint, r)
        counts[r.fingerprint] += 1
    return [(r, counts[fingerprint]) for fingerprint, r in first.items()]
