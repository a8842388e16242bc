"""The core tables, written once: each backend's migrations render them with its type words.

A backend's migrations are its history: what its first versions created, then what each later
version added. They start from the same tables (`core_tables`), and later changes both backends
take alike are `later_migrations`.
"""

from capstone.lineage import STEP_CODES
from capstone.store.sql import Dialect

__all__ = [
    "core_tables",
    "files_table",
    "later_migrations",
    "lineage_view",
    "pipeline_tables",
    "run_reasons_table",
]


def core_tables(d: Dialect) -> str:
    """The first migration's tables, the same on every backend but for the type words."""
    w = d.words
    return f"""
        CREATE TABLE run_log (
            run_id {w["counter_pk"]},
            pipeline {w["text"]} NOT NULL,
            status {w["text"]} NOT NULL,
            source {w["text"]},
            started_at {w["ts"]} NOT NULL,
            finished_at {w["ts"]},
            duration_ms {w["bigint"]} NOT NULL DEFAULT 0,
            input_records {w["bigint"]} NOT NULL DEFAULT 0,
            staged {w["bigint"]} NOT NULL DEFAULT 0,
            loaded {w["bigint"]} NOT NULL DEFAULT 0,
            stale {w["bigint"]} NOT NULL DEFAULT 0,
            rejected {w["bigint"]} NOT NULL DEFAULT 0,
            skipped {w["bigint"]} NOT NULL DEFAULT 0,
            dead_letters {w["bigint"]} NOT NULL DEFAULT 0,
            lineage_entries {w["bigint"]} NOT NULL DEFAULT 0,
            watermark_before {w["ts"]},
            watermark_after {w["ts"]},
            error {w["text"]},
            host {w["text"]},
            pid {w["int"]}
        );
        CREATE INDEX run_log_running ON run_log (pipeline) WHERE status = 'running';
        CREATE TABLE run_steps (
            run_id {w["bigint"]} NOT NULL REFERENCES run_log (run_id),
            step {w["text"]} NOT NULL,
            count {w["bigint"]} NOT NULL,
            PRIMARY KEY (run_id, step)
        ){w["table_options"]};
        CREATE TABLE watermarks (
            name {w["text"]} PRIMARY KEY,
            value {w["text"]},
            run_id {w["bigint"]},
            updated_at {w["ts"]}
        );
        CREATE TABLE target (
            key {w["text"]} PRIMARY KEY,
            name {w["text"]} NOT NULL,
            value {w["real"]} NOT NULL,
            ts {w["ts"]} NOT NULL,
            attributes {w["json"]},
            run_id {w["bigint"]} NOT NULL
        ){w["table_options"]};
        CREATE TABLE dead_letters (
            id {w["serial_pk"]},
            pipeline {w["text"]} NOT NULL,
            run_id {w["bigint"]} NOT NULL,
            last_run_id {w["bigint"]} NOT NULL,
            times_seen {w["int"]} NOT NULL DEFAULT 1,
            position {w["bigint"]} NOT NULL,
            key {w["text"]},
            reason {w["text"]} NOT NULL,
            message {w["text"]} NOT NULL,
            raw {w["text"]} NOT NULL,
            fingerprint {w["text"]} NOT NULL,
            resolved_run_id {w["bigint"]},
            UNIQUE (pipeline, fingerprint)
        );
        CREATE INDEX dead_letters_run ON dead_letters (run_id);
        CREATE TABLE lineage (
            id {w["row_id"]},
            run_id {w["bigint"]} NOT NULL,
            step {w["text"]} NOT NULL,
            key {w["text"]},
            position {w["bigint"]} NOT NULL,
            detail {w["text"]}
        )
        """


def run_reasons_table(d: Dialect) -> str:
    w = d.words
    return f"""
        CREATE TABLE run_reasons (
            run_id {w["bigint"]} NOT NULL REFERENCES run_log (run_id),
            reason {w["text"]} NOT NULL,
            count {w["bigint"]} NOT NULL,
            PRIMARY KEY (run_id, reason)
        ){w["table_options"]}
        """


def pipeline_tables(d: Dialect) -> str:
    w = d.words
    return f"""
        CREATE TABLE pipeline_schemas (
            pipeline {w["text"]} PRIMARY KEY,
            target {w["text"]} NOT NULL UNIQUE,
            definition {w["text"]} NOT NULL,
            version {w["int"]} NOT NULL,
            updated_at {w["text"]} NOT NULL
        );
        CREATE TABLE schema_changes (
            id {w["serial_pk"]},
            pipeline {w["text"]} NOT NULL,
            version {w["int"]} NOT NULL,
            change {w["text"]} NOT NULL,
            run_id {w["bigint"]},
            applied_at {w["text"]} NOT NULL
        )
        """


def later_migrations(d: Dialect) -> list[tuple[str, str]]:
    """Migrations both backends take alike, after their own first ones."""
    return [
        (
            "late records: loaded behind the watermark",
            f"ALTER TABLE run_log ADD COLUMN late {d.words['bigint']} NOT NULL DEFAULT 0",
        ),
        (
            "tombstones: loaded records that removed their key",
            f"ALTER TABLE run_log ADD COLUMN deleted {d.words['bigint']} NOT NULL DEFAULT 0",
        ),
        (
            "run uuid: the run id of the run's OpenLineage events",
            f"ALTER TABLE run_log ADD COLUMN run_uuid {d.words['text']}",
        ),
        ("file manifest: each loaded file's content, written with its run", files_table(d)),
        (
            "dead letters updated: letters a run saw again, beside the new ones",
            "ALTER TABLE run_log ADD COLUMN dead_letters_updated "
            f"{d.words['bigint']} NOT NULL DEFAULT 0",
        ),
        (
            "retention: runs whose lineage `capstone prune` removed, and its cutoff",
            f"ALTER TABLE run_log ADD COLUMN pruned_at {d.words['ts']}; "
            f"ALTER TABLE run_log ADD COLUMN pruned_before {d.words['ts']}",
        ),
        (
            "lineage in half the rows: a staged record's `stage` step is implied by its fate",
            LINEAGE_RECORDS,
        ),
        (
            "compact lineage: steps as small integers, event times as microseconds",
            compact_lineage(d),
        ),
    ]


LINEAGE_RECORDS = """
    ALTER TABLE lineage RENAME TO lineage_records;
    DELETE FROM lineage_records WHERE step = 'stage';
    CREATE VIEW lineage AS
        SELECT 2 * id + 1 AS id, run_id, step, key, position, detail FROM lineage_records
        UNION ALL
        SELECT 2 * id AS id, run_id, 'stage' AS step, key, position, CAST(NULL AS TEXT) AS detail
        FROM lineage_records WHERE step IN ('load', 'stale', 'delete')
    """
"""One row per record in `lineage_records` (its fate: load, stale, delete, reject, skip), and
the `lineage` view that reads as every step: a staged record's `stage` step is the row its fate
implies, listed before it (ids 2n and 2n + 1). Half the rows, the same history."""


def _step_name(column: str) -> str:
    whens = " ".join(f"WHEN {code} THEN '{name}'" for name, code in STEP_CODES.items())
    return f"CASE {column} {whens} END"


def _step_code(column: str) -> str:
    whens = " ".join(f"WHEN '{name}' THEN {code}" for name, code in STEP_CODES.items())
    return f"CASE {column} {whens} END"


def lineage_view(d: Dialect) -> str:
    """The `lineage` view: every step of every record as text, read from `lineage_records`.

    A record's row stands for its fate (id 2n + 1) and, when it was staged, for its `stage` step
    before it (id 2n). A NULL detail is the record's event time, `ts` (microseconds), as text."""
    staged = ", ".join(str(STEP_CODES[step]) for step in ("load", "stale", "delete"))
    return f"""
        CREATE VIEW lineage AS
            SELECT 2 * id + 1 AS id, run_id, {_step_name("step")} AS step, key, position,
                   COALESCE(detail, 'ts ' || {d.micros_text.format("ts")}) AS detail
            FROM lineage_records
            UNION ALL
            SELECT 2 * id AS id, run_id, 'stage' AS step, key, position,
                   CAST(NULL AS {d.words["text"]}) AS detail
            FROM lineage_records WHERE step IN ({staged})
        """


def compact_lineage(d: Dialect) -> str:
    """Rewrite `lineage_records` compact: the step as its code, a `ts TIME` detail as TIME's
    microseconds (about 79 bytes a record on SQLite, index included, become about 61)."""
    w = d.words
    plain = "detail LIKE 'ts %'"
    return f"""
        CREATE TABLE lineage_compact (
            id {w["row_id"]},
            run_id {w["bigint"]} NOT NULL,
            step {w["int"]} NOT NULL,
            key {w["text"]},
            position {w["bigint"]} NOT NULL,
            ts {w["bigint"]},
            detail {w["text"]}
        );
        INSERT INTO lineage_compact (id, run_id, step, key, position, ts, detail)
            SELECT id, run_id, {_step_code("step")}, key, position,
                   CASE WHEN {plain} THEN {d.text_micros.format("substr(detail, 4)")} END,
                   CASE WHEN {plain} THEN NULL ELSE detail END
            FROM lineage_records ORDER BY id;
        DROP VIEW lineage;
        DROP TABLE lineage_records;
        ALTER TABLE lineage_compact RENAME TO lineage_records;
        {d.lineage_rebuilt};
        {lineage_view(d)}
        """


def files_table(d: Dialect) -> str:
    """The manifest (`capstone.manifest`), and the run log's note of a file skipped because its
    content was loaded before, or loaded again because its content changed."""
    w = d.words
    return f"""
        CREATE TABLE files (
            id {w["serial_pk"]},
            pipeline {w["text"]} NOT NULL,
            path {w["text"]} NOT NULL,
            resolved_path {w["text"]} NOT NULL,
            size {w["bigint"]} NOT NULL,
            mtime {w["ts"]} NOT NULL,
            sha256 {w["text"]} NOT NULL,
            records {w["bigint"]} NOT NULL,
            run_id {w["bigint"]} NOT NULL REFERENCES run_log (run_id),
            loaded_at {w["ts"]} NOT NULL
        );
        CREATE INDEX files_content ON files (pipeline, sha256);
        CREATE INDEX files_path ON files (pipeline, resolved_path);
        ALTER TABLE run_log ADD COLUMN same_content_as {w["bigint"]};
        ALTER TABLE run_log ADD COLUMN changed_since {w["bigint"]}
        """
