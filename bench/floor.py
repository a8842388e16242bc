"""The raw-sqlite3 floor: capstone's work written by hand, as lean as it can honestly be.

It does everything a capstone run does, with no framework around it:

- read JSON Lines (each line validated straight from its text by Pydantic's JSON parser, orjson
  only for lines that fail), a JSON array (ijson, element by element) or CSV (csv module),
  streaming, in batches;
- validate every record with a Pydantic model equivalent to `capstone.model.Event` (stripped
  non-empty key and name of at most 256 characters, a finite number that is not a boolean, an
  ISO-8601 text timestamp made naive UTC, unknown fields kept as attributes);
- give every record one fate: rejected (malformed or invalid; a dead letter deduplicated by the
  SHA-256 of its raw text), skipped (at or below the watermark), or staged (executemany into a
  staging table);
- merge set-based with the timestamp guard: one window-function pass decides, for each staged
  record, whether it is newer than the stored row and every earlier staged record of its key (load)
  or not (stale), and one guarded upsert applies the loaded records in input order;
- write lineage for every record (load or stale, implying stage; reject; skip), the watermark, per-run
  step and reason counts, and a run log row, all in one transaction.

It writes its own schema (the same tables and keys as capstone's, without capstone's extra
lineage-by-key index), so a floor database is not a capstone database. Run it as
`python -m bench.floor INPUT DB [--format F]`; it prints its summary as JSON.
"""

import argparse
import contextlib
import csv
import hashlib
import io
import math
import os
import socket
import sqlite3
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import IO, Annotated, Any

import ijson
import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    ValidationError,
)

__all__ = ["Event", "load"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS run_log (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT, pipeline TEXT NOT NULL, status TEXT NOT NULL,
    source TEXT, started_at TEXT NOT NULL, finished_at TEXT,
    duration_ms INTEGER NOT NULL DEFAULT 0, input_records INTEGER NOT NULL DEFAULT 0,
    staged INTEGER NOT NULL DEFAULT 0, loaded INTEGER NOT NULL DEFAULT 0,
    stale INTEGER NOT NULL DEFAULT 0, rejected INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0, dead_letters INTEGER NOT NULL DEFAULT 0,
    lineage_entries INTEGER NOT NULL DEFAULT 0, watermark_before TEXT, watermark_after TEXT,
    error TEXT, host TEXT, pid INTEGER
);
CREATE TABLE IF NOT EXISTS run_steps (
    run_id INTEGER NOT NULL, step TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (run_id, step)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS run_reasons (
    run_id INTEGER NOT NULL, reason TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (run_id, reason)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS watermarks (
    name TEXT PRIMARY KEY, value TEXT, run_id INTEGER, updated_at TEXT
);
CREATE TABLE IF NOT EXISTS staging (
    seq INTEGER PRIMARY KEY, position INTEGER NOT NULL, key TEXT NOT NULL, name TEXT NOT NULL,
    value REAL NOT NULL, ts TEXT NOT NULL, attributes TEXT, ts_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS target (
    key TEXT PRIMARY KEY, name TEXT NOT NULL, value REAL NOT NULL, ts TEXT NOT NULL,
    attributes TEXT, run_id INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY, pipeline TEXT NOT NULL, run_id INTEGER NOT NULL,
    last_run_id INTEGER NOT NULL, times_seen INTEGER NOT NULL DEFAULT 1,
    position INTEGER NOT NULL, key TEXT, reason TEXT NOT NULL, message TEXT NOT NULL,
    raw TEXT NOT NULL, fingerprint TEXT NOT NULL, resolved_run_id INTEGER, record TEXT,
    UNIQUE (pipeline, fingerprint)
);
CREATE TABLE IF NOT EXISTS lineage_records (
    id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, step INTEGER NOT NULL, key TEXT,
    position INTEGER NOT NULL, ts INTEGER, detail TEXT
);
CREATE VIEW IF NOT EXISTS lineage AS
    SELECT 2 * id + 1 AS id, run_id,
           CASE step WHEN 1 THEN 'load' WHEN 2 THEN 'stale' WHEN 4 THEN 'reject'
                     WHEN 5 THEN 'skip' END AS step, key, position,
           COALESCE(detail, 'ts ' || strftime('%Y-%m-%dT%H:%M:%S', ts / 1000000, 'unixepoch')
                    || CASE WHEN ts % 1000000 = 0 THEN '' ELSE printf('.%06d', ts % 1000000) END)
               AS detail
    FROM lineage_records
    UNION ALL
    SELECT 2 * id AS id, run_id, 'stage' AS step, key, position, NULL AS detail
    FROM lineage_records WHERE step IN (1, 2);
"""

# -- the record model (equivalent to capstone.model.Event) ---------------------------------------


def _number_not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("booleans are not numbers")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("NaN and Infinity are not allowed")
    return value


def _iso_text_only(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("must be an ISO-8601 timestamp string")
    return value


def _utc_naive(value: datetime) -> datetime:
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]


class Event(BaseModel):
    """One event; unknown fields are kept in `model_extra`."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, frozen=True)

    key: Text
    name: Text
    value: Annotated[float, BeforeValidator(_number_not_bool)]
    ts: Annotated[datetime, BeforeValidator(_iso_text_only), AfterValidator(_utc_naive)]


# -- readers: (position, raw, parsed-or-None, malformed reason) ----------------------------------

Item = tuple[int, Any, Any]
"""(position, raw, parsed): raw is bytes/str, or None when it can be rebuilt from parsed; parsed is
None for a JSON line not parsed yet, a dict, any other JSON value, or a Malformed."""


class Malformed(str):
    """Stands in for the parsed record of one that could not be read; its text is the reason code."""

    __slots__ = ()


MALFORMED_JSON = Malformed("malformed.json")
NOT_OBJECT = Malformed("malformed.not_object")
BAD_COLUMNS = Malformed("malformed.columns")
MESSAGES = {
    MALFORMED_JSON: "line is not valid JSON",
    NOT_OBJECT: "record is not a JSON object",
    BAD_COLUMNS: "row does not have the header's column count",
}


def _jsonl(fh: IO[bytes]) -> Iterator[Item]:
    # Lines go to Pydantic's JSON parser unparsed (one pass, no dict); see _parse for the rest.
    for number, line in enumerate(fh, 1):
        yield number, line, None


def _parse(line: bytes) -> Any:
    """A JSON line that failed validation: its object, a Malformed, or None for a blank line."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None if not line.strip() else MALFORMED_JSON


def _json_array(fh: IO[bytes]) -> Iterator[Item]:
    # The raw text of an element is only needed for a dead letter; it is rebuilt from the parsed
    # element then (the same bytes capstone stores), not for every element.
    for index, element in enumerate(ijson.items(fh, "item", use_float=True)):
        yield index, None, element


def _csv(fh: IO[bytes]) -> Iterator[Item]:
    text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
    last: list[str] = []
    number = 0

    def lines() -> Iterator[str]:
        nonlocal number
        for line in text:
            number += 1
            last.append(line)
            yield line

    reader = csv.reader(lines())
    try:
        header = [column.strip() for column in next(reader, [])]
        width = len(header)
        last.clear()
        for row in reader:
            raw = "".join(last).rstrip("\r\n")
            position = number - len(last) + 1
            last.clear()
            if not row:
                continue
            if len(row) != width:
                yield position, raw, BAD_COLUMNS
            else:
                yield position, raw, dict(zip(header, row, strict=True))
    finally:
        text.detach()  # the caller closes the file


def _detect(head: bytes) -> str:
    head = head.lstrip()
    if head.startswith(b"["):
        return "json"
    if head.startswith(b"{") or not head:
        return "jsonl"
    return "csv"


# -- the load --------------------------------------------------------------------------------------

MERGE_LINEAGE = """
INSERT INTO lineage_records (run_id, step, key, position, ts, detail)
SELECT ?1, CASE WHEN applied THEN 1 ELSE 2 END, key, position, CASE WHEN applied THEN ts_us END,
       CASE WHEN applied THEN NULL ELSE 'kept ts ' || newest_before || ' over ' || ts END
FROM (
    SELECT key, position, ts, ts_us, ts > newest_before AS applied, newest_before
    FROM (
        SELECT s.seq, s.key, s.position, s.ts, s.ts_us,
               MAX(COALESCE(t.ts, ''), COALESCE(MAX(s.ts) OVER (
                   PARTITION BY s.key ORDER BY s.seq
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), '')) AS newest_before
        FROM staging AS s LEFT JOIN target AS t ON t.key = s.key
    )
)
"""
"""Decides load or stale for every staged record against the target as it was before the merge."""

MERGE_TARGET = """
INSERT INTO target (key, name, value, ts, attributes, run_id)
SELECT key, name, value, ts, attributes, ?1 FROM staging WHERE true ORDER BY seq
ON CONFLICT (key) DO UPDATE SET
    name = excluded.name, value = excluded.value, ts = excluded.ts,
    attributes = excluded.attributes, run_id = excluded.run_id
WHERE excluded.ts > target.ts
"""
"""Applies staged records in input order, each only if newer than what the key holds by then.

That is exactly the load/stale decision above: a record changes a row if and only if it is newer
than the stored row and every earlier staged record of its key, so the changed-row count is the
loaded count and the final row per key equals the last loaded record.
"""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _reasons(error: ValidationError) -> tuple[str, str]:
    codes, messages = [], []
    for item in error.errors(include_url=False):
        field = ".".join(str(part) for part in item["loc"]) or "record"
        kind = "invalid" if item["type"] == "value_error" else item["type"]
        codes.append(f"{field}.{kind}")
        messages.append(f"{field}: {item['msg'].removeprefix('Value error, ')}")
    return ",".join(codes), "; ".join(messages)


def _loose(record: dict[str, Any]) -> tuple[str | None, datetime | None]:
    """Key and ts of an invalid record, where they can be read (for skip and dead letters)."""
    key, ts = record.get("key"), record.get("ts")
    loose_key = key[:256] if isinstance(key, str) else None
    loose_ts = None
    if isinstance(ts, str):
        with contextlib.suppress(ValueError):
            loose_ts = _utc_naive(datetime.fromisoformat(ts))
    return loose_key, loose_ts


INSERT_STAGING = (
    "INSERT INTO staging (seq, position, key, name, value, ts, attributes, ts_us) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_DEAD = (
    "INSERT INTO dead_letters (pipeline, run_id, last_run_id, position, key, reason, message, "
    "raw, fingerprint, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (pipeline, fingerprint) DO NOTHING"
)
SEEN_DEAD = (
    "UPDATE dead_letters SET last_run_id = ?, times_seen = times_seen + 1, reason = ?, "
    "message = ? WHERE pipeline = ? AND fingerprint = ? AND run_id != ?"
)
# Lineage stores steps as codes (load 1, stale 2, reject 4, skip 5) and an event-time detail as
# microseconds since 1970, as capstone does (`capstone.lineage`).
REJECT, SKIP = 4, 5
EPOCH, MICROSECOND = datetime(1970, 1, 1), timedelta(microseconds=1)


def _micros(ts: datetime) -> int:
    return (ts - EPOCH) // MICROSECOND


INSERT_LINEAGE = (
    "INSERT INTO lineage_records (run_id, step, key, position, ts, detail) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)

Dead = tuple[int, str | None, str, str, str, dict[str, Any] | None]
"""(position, key, reason codes, message, raw text, parsed record) of a rejected record."""


@dataclass
class _Run:
    """One load's state: its id, thresholds and running counts."""

    conn: sqlite3.Connection
    run_id: int
    pipeline: str
    old: str | None
    future_limit: datetime
    skip_through: datetime | None = None
    seq: int = 0
    staged: int = 0
    rejected: int = 0
    skipped: int = 0
    new_dead: int = 0
    newest: str | None = None
    reasons: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.skip_through = None if self.old is None else datetime.fromisoformat(self.old)

    def batch(self, items: list[Item]) -> None:
        """Validate one batch, then stage, dead-letter and skip it with one executemany each."""
        stage: list[tuple[Any, ...]] = []
        dead: list[Dead] = []
        skip: list[tuple[Any, ...]] = []
        run_id, skip_through, future_limit = self.run_id, self.skip_through, self.future_limit
        validate, validate_json = Event.model_validate, Event.model_validate_json
        dumps, seq = orjson.dumps, self.seq
        for position, raw, parsed in items:
            try:
                event = validate(parsed) if parsed is not None else validate_json(raw)
            except ValidationError as error:
                record = parsed if parsed is not None else _parse(raw)
                if record is None:  # a blank line is no record
                    continue
                if type(record) is not dict:
                    bad = record if type(record) is Malformed else NOT_OBJECT
                    dead.append((position, None, bad, MESSAGES[bad], _text(raw, record), None))
                    continue
                key, loose_ts = _loose(record)
                if skip_through is not None and loose_ts is not None and loose_ts <= skip_through:
                    skip.append((run_id, SKIP, key, position, _micros(loose_ts), None))
                else:
                    dead.append((position, key, *_reasons(error), _text(raw, record), record))
                continue
            ts = event.ts
            if skip_through is not None and ts <= skip_through:
                skip.append((run_id, SKIP, event.key, position, _micros(ts), None))
                continue
            if ts > future_limit:
                message = f"ts: {ts.isoformat()} is later than now plus the tolerance"
                dead.append(
                    (position, event.key, "ts.in_future", message, _text(raw, parsed), parsed)
                )
                continue
            seq += 1
            extra = event.model_extra
            stage.append(
                (
                    seq,
                    position,
                    event.key,
                    event.name,
                    event.value,
                    ts.isoformat(),
                    dumps(extra, option=orjson.OPT_SORT_KEYS).decode() if extra else None,
                    (ts - EPOCH) // MICROSECOND,
                )
            )
        self.seq = seq
        if stage:
            self.conn.executemany(INSERT_STAGING, stage)
            self.staged += len(stage)
            newest = max(row[5] for row in stage)
            if self.newest is None or newest > self.newest:
                self.newest = newest
        if dead:
            self.dead_letters(dead)
        if skip:
            self.conn.executemany(INSERT_LINEAGE, skip)
            self.skipped += len(skip)

    def dead_letters(self, dead: list[Dead]) -> None:
        """Write dead letters (one per distinct raw text) and their reject lineage."""
        run_id, pipeline, dumps, sha256 = self.run_id, self.pipeline, orjson.dumps, hashlib.sha256
        rows = [
            (
                pipeline,
                run_id,
                run_id,
                position,
                key,
                codes,
                message,
                text,
                sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
                None if record is None else dumps(record).decode(),
            )
            for position, key, codes, message, text, record in dead
        ]
        before = self.conn.total_changes
        self.conn.executemany(INSERT_DEAD, rows)
        added = self.conn.total_changes - before
        if added < len(rows):
            self.conn.executemany(
                SEEN_DEAD, [(run_id, r[5], r[6], pipeline, r[8], run_id) for r in rows]
            )
        self.conn.executemany(
            INSERT_LINEAGE,
            [(run_id, REJECT, key, pos, None, codes) for pos, key, codes, *_ in dead],
        )
        self.new_dead += added
        self.rejected += len(dead)
        self.reasons.update(code for row in dead for code in row[2].split(","))

    def merge(self) -> int:
        """Stage and load/stale lineage, then the guarded upsert; returns how many loaded."""
        conn, run_id = self.conn, self.run_id
        # One lineage row per staged record: its `stage` step is implied (the `lineage` view).
        conn.execute(MERGE_LINEAGE, (run_id,))
        before = conn.total_changes
        conn.execute(MERGE_TARGET, (run_id,))
        loaded = conn.total_changes - before
        conn.execute("DELETE FROM staging")
        return loaded

    def finish(self, loaded: int, started: datetime) -> dict[str, Any]:
        """Watermark, step and reason counts, the run log row; commit. Returns the counts."""
        conn, run_id, old, newest = self.conn, self.run_id, self.old, self.newest
        watermark = old if newest is None else newest if old is None else max(old, newest)
        finished = _now()
        staged, rejected, skipped = self.staged, self.rejected, self.skipped
        counts = {
            "input_records": staged + rejected + skipped,
            "staged": staged,
            "loaded": loaded,
            "stale": staged - loaded,
            "rejected": rejected,
            "skipped": skipped,
            "dead_letters": self.new_dead,
            "lineage_entries": 2 * staged + rejected + skipped,
            "watermark_before": old,
            "watermark": watermark,
        }
        conn.execute(
            "INSERT INTO watermarks (name, value, run_id, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value, run_id = excluded.run_id, "
            "updated_at = excluded.updated_at",
            (self.pipeline, watermark, run_id, finished.isoformat()),
        )
        steps = {"stage": staged, "load": loaded, "stale": staged - loaded}
        steps |= {"reject": rejected, "skip": skipped}
        conn.executemany(
            "INSERT INTO run_steps (run_id, step, count) VALUES (?, ?, ?)",
            [(run_id, step, count) for step, count in steps.items() if count],
        )
        conn.executemany(
            "INSERT INTO run_reasons (run_id, reason, count) VALUES (?, ?, ?)",
            [(run_id, reason, count) for reason, count in self.reasons.items()],
        )
        conn.execute(
            "UPDATE run_log SET status = 'success', finished_at = :finished, duration_ms = :ms, "
            "input_records = :input_records, staged = :staged, loaded = :loaded, stale = :stale, "
            "rejected = :rejected, skipped = :skipped, dead_letters = :dead_letters, "
            "lineage_entries = :lineage_entries, watermark_before = :watermark_before, "
            "watermark_after = :watermark WHERE run_id = :run_id",
            counts
            | {
                "finished": finished.isoformat(),
                "ms": round((finished - started).total_seconds() * 1000),
                "run_id": run_id,
            },
        )
        conn.execute("COMMIT")
        return counts


def load(
    input_path: str,
    db_path: str,
    *,
    fmt: str | None = None,
    batch_size: int = 10_000,
    pipeline: str = "events",
    future_tolerance: timedelta = timedelta(days=1),
) -> dict[str, Any]:
    """Load `input_path` into the floor database at `db_path`; return the run's counts."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA cache_size = -65536")
        conn.executescript(SCHEMA)
        started = _now()
        conn.execute("BEGIN IMMEDIATE")
        try:
            run_id = conn.execute(
                "INSERT INTO run_log (pipeline, status, source, started_at, host, pid) "
                "VALUES (?, 'running', ?, ?, ?, ?)",
                (pipeline, input_path, started.isoformat(), socket.gethostname(), os.getpid()),
            ).lastrowid
            row = conn.execute(
                "SELECT value FROM watermarks WHERE name = ?", (pipeline,)
            ).fetchone()
            assert run_id is not None
            run = _Run(conn, run_id, pipeline, row and row[0], started + future_tolerance)
            with io.BufferedReader(io.FileIO(input_path, "rb"), 1 << 16) as fh:
                if fh.peek(3)[:3] == b"\xef\xbb\xbf":
                    fh.read(3)
                fmt = fmt or _detect(fh.peek(4096))
                items = {"jsonl": _jsonl, "json": _json_array, "csv": _csv}[fmt](fh)
                while batch := list(islice(items, batch_size)):
                    run.batch(batch)
            return run.finish(run.merge(), started)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()


def _text(raw: bytes | str | None, record: Any) -> str:
    """The raw text of a record, as a dead letter keeps it."""
    if raw is None:  # a JSON array element: capstone keeps its compact JSON as the raw text
        return orjson.dumps(record).decode()
    if isinstance(raw, bytes):
        return raw.rstrip(b"\r\n").decode("utf-8", "backslashreplace")
    return raw


def main(argv: list[str] | None = None) -> None:
    """`python -m bench.floor INPUT DB [--format F] [--batch-size N]`: load, print counts as JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=main.__doc__)
    parser.add_argument("input")
    parser.add_argument("db")
    parser.add_argument("--format", choices=("json", "jsonl", "csv"))
    parser.add_argument("--batch-size", type=int, default=10_000)
    args = parser.parse_args(argv)
    counts = load(args.input, args.db, fmt=args.format, batch_size=args.batch_size)
    sys.stdout.write(orjson.dumps(counts).decode() + "\n")


if __name__ == "__main__":
    main()
