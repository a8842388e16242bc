"""What a run reports: one model for the summary and for every row of the run log."""

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, SerializerFunctionWrapHandler, model_serializer

__all__ = ["DeadLetter", "Pruned", "RunStatus", "RunSummary"]


class RunStatus(StrEnum):
    """Run statuses as stored in `run_log.status` (lower-case words)."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    ABANDONED = "abandoned"
    INTERRUPTED = "interrupted"


class RunSummary(BaseModel):
    """Counts are for this run only. Invariants: input = staged + rejected + skipped, staged = loaded + stale."""

    run_id: int
    pipeline: str
    status: RunStatus
    source: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    input_records: int = 0
    staged: int = 0
    loaded: int = 0
    late: int = 0
    """Loaded records that were behind the watermark: delivered late, loaded all the same."""
    deleted: int = 0
    """Loaded records that were tombstones: each removed its key from the target."""
    stale: int = 0
    rejected: int = 0
    skipped: int = 0
    dead_letters: int = 0
    """New dead letters: bad records no earlier run had rejected."""
    dead_letters_updated: int = 0
    """Dead letters of earlier runs that this run saw again (rejected once more, or replayed and
    still rejected): the letter is kept, its count and reasons updated."""
    lineage_entries: int = 0
    watermark_before: str | None = None
    watermark: str | None = None
    duration_ms: int = 0
    error: str | None = None
    run_uuid: str | None = None
    """The run's UUID: the run id of its OpenLineage events (None for runs logged before it)."""
    same_content_as: int | None = None
    """Set when the file was skipped whole: the run that loaded the same content before."""
    changed_since: int | None = None
    """Set when the file's path was loaded before with other content: that run."""
    pruned_at: str | None = None
    """Set once `capstone prune` removed the run's per-record lineage (its counts stay)."""

    @model_serializer(mode="wrap")
    def _notes_when_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # The file notes appear only when they say something: a run of a new file reads as
        # it always has (the README's summary, scripts reading --output).
        data: dict[str, Any] = handler(self)
        for name in ("same_content_as", "changed_since", "pruned_at"):
            if data.get(name, 0) is None:
                del data[name]
        return data

    def is_balanced(self) -> bool:
        """True when every input record has exactly one fate and every staged one a merge result."""
        return (
            self.input_records == self.staged + self.rejected + self.skipped
            and self.staged == self.loaded + self.stale
        )


class DeadLetter(BaseModel):
    """A rejected record: its raw text, why it was rejected, and whether a replay resolved it."""

    id: int
    pipeline: str
    run_id: int
    last_run_id: int
    times_seen: int
    position: int
    key: str | None
    reason: str
    message: str
    raw: str
    record: dict[str, Any] | None = None
    resolved_run_id: int | None = None


class Pruned(BaseModel):
    """What `capstone prune` removed from one pipeline (or, in a dry run, would remove)."""

    pipeline: str
    before: str
    """The cutoff: runs that finished before it lose their per-record lineage."""
    dry_run: bool = False
    runs: int = 0
    """Run-log rows marked pruned; each keeps its counts, steps and reject reasons."""
    first_run: int | None = None
    last_run: int | None = None
    lineage_rows: int = 0
    dead_letters: int = 0
    """Resolved or dismissed dead letters, resolved by one of these runs."""
    bytes_before: int | None = None
    """What the backend can tell of the space these rows take: SQLite the database's pages in
    use, PostgreSQL the on-disk size of tables lineage and dead_letters with their indexes."""
    bytes_after: int | None = None
    free_before: int | None = None
    """SQLite: bytes of free pages inside the file, which later runs reuse (None on PostgreSQL)."""
    free_after: int | None = None
    vacuumed: bool = False
    """A vacuum ran after this prune's commit (`--vacuum`)."""

    @property
    def bytes_released(self) -> int | None:
        """Bytes the pruned rows no longer take: given back to the disk, or free for reuse."""
        if self.bytes_before is None or self.bytes_after is None:
            return None
        used_before = self.bytes_before - (self.free_before or 0)
        return used_before - (self.bytes_after - (self.free_after or 0))
