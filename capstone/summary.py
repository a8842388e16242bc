"""What a run reports: one model for the summary and for every row of the run log."""

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, SerializerFunctionWrapHandler, model_serializer

__all__ = ["DeadLetter", "RunStatus", "RunSummary"]


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
    status: str
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

    @model_serializer(mode="wrap")
    def _notes_when_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # The file notes appear only when they say something: a run of a new file reads as
        # it always has (the README's summary, scripts reading --output).
        data: dict[str, Any] = handler(self)
        for name in ("same_content_as", "changed_since"):
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
