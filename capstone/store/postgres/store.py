"""The PostgreSQL store: its dialect, migrations, locks, COPY staging and merge."""

import contextlib
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors, sql
from psycopg.pq import TransactionStatus

from capstone.errors import LockError, MissingDatabase, StoreError
from capstone.fates import TS_US, Merged, Screen, StagedRow
from capstone.lineage import STEP_CODES
from capstone.spec import PipelineSpec
from capstone.store.ddl import core_tables, later_migrations, pipeline_tables, run_reasons_table
from capstone.store.guard import gone, guard, holds, ties_before
from capstone.store.postgres.connection import connect, redact_url, secrets_of, store_error
from capstone.store.postgres.locks import AdvisoryLocks
from capstone.store.postgres.screen import jsonb_text, nul_free, screen_for
from capstone.store.sql import (
    STANDARD_WORDS,
    Dialect,
    Row,
    SqlRun,
    SqlStore,
    column_definitions,
)
from capstone.store.tables import quote
from capstone.summary import RunSummary

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

DIALECT = Dialect(
    words=STANDARD_WORDS | {"json": "jsonb"},
    named="%({})s",
    find="strpos",
    list_of="SELECT unnest(CAST(:{name} AS {type}[]))",
    error=psycopg.Error,
    json_param="CAST(:record AS jsonb)",
    ts_text="capstone_ts_text",
    temp="pg_temp",
    # Seconds and microseconds apart: interval * bigint goes through a float, which rounds the
    # microseconds of times after 2255.
    micros_text="capstone_ts_text(timestamp '1970-01-01' + {0} / 1000000 * interval '1 second' "
    "+ {0} % 1000000 * interval '1 microsecond')",
    # EXTRACT gives numeric (exact) since PostgreSQL 14.
    text_micros="CAST(EXTRACT(EPOCH FROM CAST({0} AS timestamp)) * 1000000 AS bigint)",
    lineage_rebuilt="""
        CREATE INDEX lineage_key ON lineage_records (key);
        CREATE INDEX lineage_run ON lineage_records USING brin (run_id);
        SELECT setval(pg_get_serial_sequence('lineage_records', 'id'), COALESCE(MAX(id), 0) + 1,
                      false) FROM lineage_records
        """,
)

MIGRATIONS: list[tuple[str, str]] = [
    (
        "core tables: run log, watermarks, target, dead letters, lineage",
        core_tables(DIALECT)
        + "; ALTER TABLE run_log ADD COLUMN backend_pid integer"
        + "; ALTER TABLE dead_letters ADD COLUMN record jsonb;"
        + run_reasons_table(DIALECT)
        + """;
        CREATE INDEX lineage_key ON lineage (key);
        CREATE INDEX lineage_run ON lineage USING brin (run_id);
        -- The canonical text form of a timestamp, as Python's isoformat() writes it.
        CREATE OR REPLACE FUNCTION capstone_ts_text(value timestamp) RETURNS text
            LANGUAGE sql STABLE PARALLEL SAFE
            AS $$
                SELECT to_char(value, 'YYYY-MM-DD"T"HH24:MI:SS')
                    || CASE WHEN extract(microseconds FROM value)::bigint % 1000000 = 0 THEN ''
                            ELSE to_char(value, '.US') END
            $$
        """,
    ),
    ("pipelines: stored definitions, schema changes", pipeline_tables(DIALECT)),
]
MIGRATIONS += later_migrations(DIALECT)
SCHEMA_VERSION = len(MIGRATIONS)


class PostgresRun(SqlRun):
    """One run's writes inside the transaction `PostgresStore.run_transaction` opened."""

    store: "PostgresStore"

    @classmethod
    def screen_for(cls, spec: PipelineSpec) -> Screen:
        return screen_for(spec)

    def __init__(self, store: "PostgresStore", run: RunSummary, spec: PipelineSpec) -> None:
        super().__init__(store, run, spec)
        self.screen: Screen = screen_for(spec)
        # The event time stays text until the merge: its text is the lineage detail as given.
        columns = column_definitions(spec, DIALECT.types, event_time_type="text")
        key = ", _lineage_key text NOT NULL" if self.layout.own_lineage_key else ""
        key += f", {TS_US} bigint NOT NULL"
        # Temporary: private to this session, so parallel runs of other pipelines never mix.
        store.conn.execute(
            "CREATE TEMP TABLE staging (seq bigint NOT NULL, position bigint NOT NULL, "
            f"{', '.join(columns)}, attributes jsonb{key}) ON COMMIT DROP"
        )
        self._columns = [quote(name) for name in self.layout.names]

    def stage(self, rows: Sequence[StagedRow], behind: int = 0) -> None:
        try:
            self.store._bulk("pg_temp.staging", self._columns, rows)
        except (psycopg.DataError, errors.UntranslatableCharacter) as error:
            position = self.layout.names.index("position")
            for row in rows:
                if reasons := self.screen(row):
                    raise StoreError(
                        f"the record at position {row[position]} cannot be stored in PostgreSQL "
                        f"({reasons[0][1]}); remove the character from the input and run again"
                    ) from None
            raise self.store._store_error(error) from None

    def merge(self, skip_through: str | None, watermark: str | None) -> Merged:
        run = {"run": self.run.run_id, "watermark": watermark}
        # CREATE TABLE ... AS takes no parameters: the two times go in as quoted literals.
        skip, behind = (
            sql.Literal(value).as_string(self.store.conn) for value in (skip_through, watermark)
        )
        execute = self.store.conn.execute
        spec = self.spec
        target = self.store._table(spec.target)
        # In the plan the record's columns are c0, c1, ...: no field name can clash with the
        # plan's own columns (seq, ts, applied, ...), whatever the configuration calls its fields.
        alias = {name: f"c{index}" for index, name in enumerate(spec.columns)}
        ts = quote(spec.event_time)
        record = ", ".join(
            f"{quote(name)} AS {alias[name]}" for name in spec.columns if name != spec.event_time
        )
        # Sorts and partitions compare text keys byte by byte (COLLATE "C"): equal keys are equal
        # bytes in any deterministic collation, and a byte sort takes half the time of one by
        # the database's locale (measured at 1M rows, in memory or on disk).
        keys = ", ".join(_bytewise(spec, k, alias[k]) for k in spec.key)
        key_text = "lineage_key" if self.layout.own_lineage_key else alias[spec.key[0]]
        key_text_order = f'{key_text} COLLATE "C"'
        wins = guard(spec)
        staged_column = {**{n: f"s.{a}" for n, a in alias.items()}, spec.event_time: "s.ts"}
        column = staged_column.get
        # Where ties replace, a record behind the skip line counts the earlier staged records of
        # its key at its time (`holds`); the window is left out where nothing can be covered.
        counts_ties = spec.ties == "replace" and skip_through is not None
        earlier_ties = (
            ", " + ties_before(", ".join(quote(k) for k in spec.key), ts, "seq") + " AS ties_before"
            if counts_ties
            else ""
        )
        held = holds(
            spec,
            DIALECT,
            lambda name: column(name, f"s.{name}"),
            earlier_ties="s.ties_before" if counts_ties else "0",
        )
        deletes = spec.delete_field is not None
        tombstones = self.store._table(spec.tombstones)
        on_key = " AND ".join(f"d.{quote(k)} = s.{alias[k]}" for k in spec.key)
        tombstone = f"LEFT JOIN {tombstones} AS d ON {on_key}" if deletes else ""
        stored = f"t.{ts}, d.{ts}" if deletes else f"t.{ts}"
        execute("ANALYZE pg_temp.staging")
        # A staged record is applied when its ts beats everything before it for its key (strictly
        # newer, or as new where ties replace): the stored row and every earlier staged record;
        # one the target (or a tombstone) already holds (`covered`, behind the watermark) is
        # skipped instead. The last applied record of a key, the winner, is what the target ends
        # up holding (or, a tombstone, not holding); that equals applying records one by one.
        execute(
            f"""
            CREATE TEMP TABLE merge_plan ON COMMIT DROP AS
            SELECT p.*, p.applied AND p.seq = MAX(p.seq) FILTER (WHERE p.applied)
                                              OVER (PARTITION BY {keys}) AS winner
            FROM (
                SELECT b.*, (b.newest_before IS NULL OR b.ts {wins} b.newest_before)
                                AND NOT b.covered AS applied,
                       COALESCE(b.ts <= {behind}::timestamp, false) AS behind
                FROM (
                    SELECT s.*, COALESCE(s.ts <= {skip}::timestamp AND {held}, false) AS covered,
                           {gone(spec, lambda name: column(name, name))} AS gone,
                           t.{quote(spec.key[0])} IS NOT NULL AS in_target,
                           GREATEST({stored}, MAX(s.ts) OVER (
                               PARTITION BY {", ".join(_bytewise(spec, k, f"s.{alias[k]}") for k in spec.key)}
                               ORDER BY s.seq
                               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)) AS newest_before
                    FROM (
                        SELECT seq, position, {record}, {ts}::timestamp AS ts, {ts} AS ts_text,
                               {TS_US} AS ts_us{earlier_ties},
                               attributes{", _lineage_key AS lineage_key" if self.layout.own_lineage_key else ""}
                        FROM pg_temp.staging
                    ) AS s LEFT JOIN {target} AS t
                        ON {" AND ".join(f"t.{quote(k)} = s.{alias[k]}" for k in spec.key)}
                    {tombstone}
                ) AS b
            ) AS p
            """
        )
        execute("ANALYZE pg_temp.merge_plan")
        replanned = self._write_winners(target, alias, keys, run)
        if deletes:
            self._keep_tombstones(target, tombstones, alias, run)
        # Key order again: the lineage key index takes the rows in sequence, not scattered. The
        # plan is already in that order where the lineage key is the key's own text, unless
        # `_write_winners` rewrote rows of it.
        in_order = not self.layout.own_lineage_key and not replanned
        order = "" if in_order else f" ORDER BY {key_text_order}, seq"
        codes = STEP_CODES
        skip_rows = execute(
            "INSERT INTO lineage_records (run_id, step, key, position, ts) "
            f"SELECT %(run)s, {codes['skip']}, {key_text}, position, ts_us "
            f"FROM pg_temp.merge_plan WHERE covered{order}",
            run,
        ).rowcount
        # One row a record: its fate, implying its `stage` step; a loaded record's detail is its
        # event time, stored as microseconds (detail NULL).
        merge_rows = execute(
            f"""
            INSERT INTO lineage_records (run_id, step, key, position, ts, detail)
            SELECT %(run)s, CASE WHEN applied AND gone THEN {codes["delete"]}
                                 WHEN applied THEN {codes["load"]} ELSE {codes["stale"]} END,
                   {key_text}, position,
                   CASE WHEN applied AND NOT behind THEN ts_us END,
                   CASE WHEN applied AND behind THEN 'late: ' || ts_text || ' behind watermark '
                                                     || capstone_ts_text(%(watermark)s::timestamp)
                        WHEN applied THEN NULL
                        ELSE 'kept ts ' || capstone_ts_text(newest_before) || ' over ' || ts_text
                   END
            FROM pg_temp.merge_plan WHERE NOT covered{order}
            """,
            run,
        ).rowcount
        # Each merge row stands for two steps: `stage` and its fate (the `lineage` view).
        self.lineage_entries += skip_rows + 2 * merge_rows
        counts = execute(
            "SELECT COUNT(*) FILTER (WHERE NOT covered) AS staged, "
            "COUNT(*) FILTER (WHERE applied) AS loaded, COUNT(*) FILTER (WHERE covered) AS "
            "skipped, COUNT(*) FILTER (WHERE applied AND behind) AS late, "
            "COUNT(*) FILTER (WHERE applied AND gone) AS deleted FROM pg_temp.merge_plan"
        ).fetchone()
        assert counts is not None
        execute("DROP TABLE pg_temp.merge_plan")
        execute("TRUNCATE pg_temp.staging")
        loaded = int(counts["loaded"])
        return Merged(
            loaded=loaded,
            stale=int(counts["staged"]) - loaded,
            skipped=int(counts["skipped"]),
            late=int(counts["late"]),
            deleted=int(counts["deleted"]),
        )

    def _write_winners(
        self, target: str, alias: dict[str, str], keys: str, run: dict[str, Any]
    ) -> bool:
        """Write each key's winner (`merge_plan`) into the target, unless a run has committed a
        newer row for the key since the plan was made: its records are then marked stale in the
        plan (True: the plan was rewritten)."""
        spec, execute = self.spec, self.store.conn.execute
        ts, wins = quote(spec.event_time), guard(spec)
        values = ", ".join(
            "ts" if name == spec.event_time else alias[name] for name in spec.columns
        )
        updates = ", ".join(
            f"{quote(name)} = excluded.{quote(name)}"
            for name in spec.columns
            if name not in spec.key
        )
        insert = (
            f"INSERT INTO {target} AS t ({', '.join(quote(c) for c in spec.columns)}, attributes, "
            f"run_id) SELECT {values}, attributes, %(run)s FROM pg_temp.merge_plan "
            "WHERE winner AND NOT gone"
        )
        upsert = (
            f"{insert} ON CONFLICT ({', '.join(quote(k) for k in spec.key)}) DO UPDATE SET "
            f"{updates}, attributes = excluded.attributes, run_id = excluded.run_id "
            f"WHERE excluded.{ts} {wins} t.{ts}"
        )
        counted = execute(
            "SELECT COUNT(*) AS winners, COUNT(*) FILTER (WHERE in_target) AS stored "
            "FROM pg_temp.merge_plan WHERE winner AND NOT gone"
        ).fetchone()
        assert counted is not None
        # Key order: a run writing the same keys waits instead of deadlocking. No ORDER BY: the
        # plan was written in key order (the order its windows sorted it in), and a sequential
        # scan of a temporary table reads it back so (no parallel or synchronized scans there),
        # which spares a second sort of every winner (0.25 s at 690k; lineage 0.2 s more).
        if counted["stored"]:
            written = execute(upsert, run).rowcount
        else:
            # No key is in the target yet (a first load, a batch of new keys): a plain INSERT
            # skips the upsert's probe for a conflict (1.2 s of 2.7 s for 690k new keys). A run
            # that wrote one of the keys since the plan was made fails it: the upsert then does
            # the work instead, as if it had run alone.
            execute("SAVEPOINT new_keys")
            try:
                written = execute(insert, run).rowcount
            except errors.UniqueViolation:
                execute("ROLLBACK TO SAVEPOINT new_keys")
                written = execute(upsert, run).rowcount
            else:
                execute("RELEASE SAVEPOINT new_keys")
        if written == counted["winners"]:
            return False
        # Another run committed a newer row for a key after the plan was made: every record of
        # that key is stale against it.
        execute(
            f"UPDATE pg_temp.merge_plan AS p SET applied = false, newest_before = t.{ts} "
            f"FROM {target} AS t WHERE "
            + " AND ".join(f"t.{quote(k)} = p.{alias[k]}" for k in spec.key)
            + " AND p.applied AND t.run_id <> %(run)s",
            run,
        )
        return True

    def _keep_tombstones(
        self, target: str, tombstones: str, alias: dict[str, str], run: dict[str, Any]
    ) -> None:
        """Winning tombstones remove their key from the target and keep its time; winning
        records of a key with a tombstone bring the key back and drop the tombstone."""
        spec, execute = self.spec, self.store.conn.execute
        keys = ", ".join(quote(k) for k in spec.key)
        on_target = " AND ".join(f"t.{quote(k)} = p.{alias[k]}" for k in spec.key)
        on_tombstone = " AND ".join(f"d.{quote(k)} = p.{alias[k]}" for k in spec.key)
        ts = quote(spec.event_time)
        execute(
            f"DELETE FROM {target} AS t USING pg_temp.merge_plan AS p "
            f"WHERE p.winner AND p.gone AND {on_target}"
        )
        execute(
            f"INSERT INTO {tombstones} ({keys}, {ts}, run_id) "
            f"SELECT {', '.join(alias[k] for k in spec.key)}, ts, %(run)s "
            "FROM pg_temp.merge_plan WHERE winner AND gone "
            f"ON CONFLICT ({keys}) DO UPDATE SET {ts} = excluded.{ts}, run_id = excluded.run_id",
            run,
        )
        execute(
            f"DELETE FROM {tombstones} AS d USING pg_temp.merge_plan AS p "
            f"WHERE p.winner AND NOT p.gone AND {on_tombstone}"
        )


def _bytewise(spec: PipelineSpec, field: str, expression: str) -> str:
    """A key part's expression, compared by bytes where it is text."""
    return f'{expression} COLLATE "C"' if spec.fields[field].type == "string" else expression


class PostgresStore(SqlStore):
    """A capstone database in one PostgreSQL schema (the first schema on the search_path)."""

    migrations = MIGRATIONS
    dialect = DIALECT
    run_class = PostgresRun

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.display_url = redact_url(url)
        self._secrets = secrets_of(url)
        self.schema = ""
        self.conn = connect(url, self.display_url, self._secrets)
        try:
            with self._translate():
                row = self._one("SELECT current_schema() AS schema, pg_backend_pid() AS pid")
                assert row is not None
                schema, self.backend_pid = row["schema"], int(row["pid"])
                if schema is None:
                    raise StoreError(
                        f"no schema on the search_path of {self.display_url} exists; create one "
                        "or fix options=-csearch_path=... in --db"
                    )
                self.schema = schema
                self.locks = AdvisoryLocks(self.conn, schema)
                if not create and self._schema_version() == 0:
                    raise MissingDatabase(
                        f"{self.display_url} holds no capstone tables (schema {schema!r}); run "
                        "`capstone run` first or check --db"
                    )
                self._migrate()
                self._mark_abandoned()
        except BaseException:
            self.conn.close()
            raise

    def _where(self) -> str:
        return f"schema {self.schema!r} of {self.display_url}"

    def _space(self) -> tuple[int | None, int | None]:
        # A DELETE leaves the files as large as they were: VACUUM marks the dead rows' space
        # reusable (shrinking a file only by its empty end), VACUUM FULL rewrites the table.
        row = self._one(
            "SELECT pg_total_relation_size(to_regclass(:lineage)) "
            "+ pg_total_relation_size(to_regclass(:letters)) AS size",
            {"lineage": self._table("lineage_records"), "letters": self._table("dead_letters")},
        )
        return (None if row is None else int(row["size"])), None

    def _after_prune(self) -> None:
        # The planner's statistics would still count the deleted rows until autovacuum ran.
        self.conn.execute(
            f"ANALYZE {self._table('lineage_records')}, {self._table('dead_letters')}"
        )

    def _give_back(self, vacuum: bool) -> None:
        if vacuum:
            # Plain VACUUM: no exclusive lock, so runs of other pipelines go on meanwhile.
            self.conn.execute(
                f"VACUUM {self._table('lineage_records')}, {self._table('dead_letters')}"
            )

    def dataset(self, table: str) -> tuple[str, str]:
        info = self.conn.info
        # A Unix socket's folder is no host name: the server is this machine's.
        host = "localhost" if info.host.startswith("/") else info.host
        return f"postgres://{host}:{info.port}", f"{info.dbname}.{self.schema}.{table}"

    def _store_error(self, error: Exception) -> StoreError:
        return store_error(error, self.display_url, self._secrets, self.schema, self.conn.closed)

    def _clean(self, text: str) -> str:
        return nul_free(text)

    def _json(self, text: str | None) -> str | None:
        return jsonb_text(text)

    def _list(self, values: Sequence[int | str]) -> Any:
        return list(values)

    def _stream(self, statement: str, params: Mapping[str, Any]) -> Generator[Row]:
        # A plain cursor would fetch every row first; stream() reads them one at a time.
        with self.conn.cursor() as cursor:
            yield from cursor.stream(statement, params)

    def _run_many(self, statement: str, rows: Sequence[Any]) -> int:
        with self.conn.cursor() as cursor:
            cursor.executemany(statement, rows)
            return max(int(cursor.rowcount), 0)

    def _bulk(self, table: str, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> None:
        statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
        with self.conn.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)

    def _table(self, name: str) -> str:
        schema = self.schema.replace('"', '""')
        return f'"{schema}".{quote(name)}'

    def _table_exists(self, name: str) -> bool:
        row = self._one(
            "SELECT EXISTS (SELECT 1 FROM pg_class AS c JOIN pg_namespace AS n "
            "ON n.oid = c.relnamespace WHERE n.nspname = current_schema() "
            "AND lower(c.relname) = lower(:name)) AS found",
            {"name": name},
        )
        return bool(row and row["found"])

    def _in_transaction(self) -> bool:
        return not self.conn.closed and self.conn.info.transaction_status != TransactionStatus.IDLE

    def _rollback(self) -> None:
        with contextlib.suppress(psycopg.Error):
            super()._rollback()

    def _begin_migration(self) -> None:
        self.conn.execute("BEGIN")
        # Workers starting together on a new database: one migrates, the others wait here.
        self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (self.locks.migration_key(),))

    def _mark_abandoned(self) -> None:
        """A `running` row whose run lock is free belongs to a session that ended mid-run.

        A run takes its run lock in the transaction that inserts its row, so a row is never
        visible without its lock while its session lives (including runs waiting for the pipeline).
        """
        for row in self._all("SELECT run_id FROM run_log WHERE status = 'running'"):
            key = self.locks.run_key(row["run_id"])
            if self.locks.try_lock(key):
                try:
                    self._abandon(row["run_id"])
                finally:
                    self.locks.unlock(key)

    def _begin_write(self, pipeline: str, lock_timeout: float) -> None:
        self.conn.execute("BEGIN")

    def _claim_run(self, run_id: int) -> None:
        # Held until the run ends (or its session does): a live run is never abandoned.
        self.conn.execute("SELECT pg_try_advisory_lock(%s)", (self.locks.run_key(run_id),))
        self.conn.execute(
            "UPDATE run_log SET backend_pid = pg_backend_pid() WHERE run_id = %s", (run_id,)
        )

    def _release_run(self, run_id: int) -> None:
        self.locks.unlock(self.locks.run_key(run_id))

    @contextmanager
    def _locked(self, pipeline: str, lock_timeout: float, own_run: int | None) -> Iterator[None]:
        key = self.locks.lock_pipeline(pipeline, lock_timeout, own_run or 0)
        try:
            self.conn.execute("BEGIN")
            try:
                yield
            finally:
                self._rollback()  # unless committed inside: nothing is kept
        finally:
            self.locks.unlock(key)

    @contextmanager
    def _table_change(self, spec: PipelineSpec, lock_timeout: float) -> Iterator[None]:
        # ALTER TABLE waits for every reader of the table, and readers then queue behind it: wait
        # no longer than the run would for its pipeline (PostgreSQL reads 0 as "forever").
        timeout = f"{max(1, round(lock_timeout * 1000))}ms"
        self.conn.execute("SELECT set_config('lock_timeout', %s, true)", (timeout,))
        try:
            yield
        except errors.LockNotAvailable:
            raise LockError(
                f"changing table {spec.target!r} for pipeline {spec.name!r} waited {lock_timeout:g}s "
                "for another session that uses the table or claims it (a long query, another "
                "run); wait for it to finish or raise --lock-timeout"
            ) from None
        self.conn.execute("SET LOCAL lock_timeout TO DEFAULT")
