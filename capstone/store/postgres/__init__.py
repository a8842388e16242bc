"""PostgreSQL backend: many workers on many machines load into one shared database.

Same semantics as the SQLite backend (the shared core is `capstone.store.sql`), with
PostgreSQL's own tools:

- typed columns (`timestamp` holding naive UTC, `double precision`, `jsonb` for attributes and
  parsed dead-letter records); the raw text of a dead letter stays `text`, kept as it was read;
- one typed target table per pipeline, created and altered inside the run's transaction, so a
  failed run takes its schema change back;
- `COPY` into a per-run temporary staging table shaped like the pipeline's records, so runs of
  different pipelines never see each other's staged rows, then a set-based guarded merge
  (`INSERT ... ON CONFLICT (key columns) DO UPDATE ... WHERE excluded.ts > target.ts`);
- a session-level advisory lock per pipeline: one run per pipeline at a time, different
  pipelines in parallel; a second advisory lock per run tells live runs from abandoned ones
  (`locks`);
- a screen for valid records PostgreSQL cannot store (NUL characters, keys too long for an
  index), which become dead letters instead of failing the run (`screen`);
- URLs shown with their password hidden, and driver errors turned into one line (`connection`).
"""

from capstone.store.postgres.connection import redact_url
from capstone.store.postgres.screen import MAX_KEY_BYTES, screen_for
from capstone.store.postgres.store import SCHEMA_VERSION, PostgresStore

__all__ = ["MAX_KEY_BYTES", "SCHEMA_VERSION", "PostgresStore", "redact_url", "screen_for"]
