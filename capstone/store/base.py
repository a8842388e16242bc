"""The storage interface the pipeline talks to; one implementation per database."""

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from capstone.classify import Rejected, Screen, Skipped, Staged
from capstone.errors import ConfigError, StoreError
from capstone.schema import PipelineSpec
from capstone.summary import DeadLetter, LineageEntry, RunSummary, StepCount

__all__ = [
    "STEPS",
    "RunTransaction",
    "Store",
    "iter_steps",
    "not_replayed",
    "refuse_foreign",
    "sightings",
]

STEPS = ("stage", "load", "stale", "reject", "skip")
"""Lineage steps, in the order a record can pass through them."""


class RunTransaction(Protocol):
    """Everything one run writes, in one database transaction that commits only in `finish`."""

    @property
    def screen(self) -> Screen | None:
        """Reasons this backend cannot store a valid record (None: it can store any)."""

    def read_watermark(self) -> str | None:
        """The pipeline's stored watermark text, unvalidated (None when there is none)."""

    def stage(self, rows: Sequence[Staged]) -> None:
        """Append valid records to the staging table."""

    def reject(self, rows: Sequence[Rejected]) -> int:
        """Write dead letters and their lineage; returns how many dead letters are new."""

    def skip(self, rows: Sequence[Skipped]) -> None:
        """Write lineage for records the watermark skipped."""

    def merge(self) -> tuple[int, int]:
        """Apply staging to the target with the timestamp guard; returns (loaded, stale)."""

    def replay_candidates(self, reason: str | None, ids: Sequence[int] | None) -> list[DeadLetter]:
        """Unresolved dead letters of this run's pipeline to re-validate (filtered by reason code
        substring and/or ids), oldest first."""

    def resolve(self, dead_letter_ids: Sequence[int]) -> None:
        """Mark dead letters resolved by this run (their records were staged)."""

    def finish(self, summary: RunSummary, reasons: dict[str, int]) -> None:
        """Store the watermark, the run's success row, its step and reject-reason counts, commit."""


class Store(Protocol):
    """A capstone database: run log, watermarks, lineage, dead letters, target."""

    display_url: str

    def begin_run(self, pipeline: str, source: str, lock_timeout: float = 5.0) -> RunSummary:
        """Record a `running` row (committed at once) and return it; waits at most
        `lock_timeout` seconds for the database to accept the write."""

    def check_pipeline(self, spec: PipelineSpec) -> None:
        """Raise ConfigError when the pipeline's target table cannot take `spec` (read only)."""

    def pipeline_version(self, pipeline: str) -> tuple[str, int] | None:
        """(target table, definition version) stored for a pipeline, or None before its first run."""

    def run_transaction(
        self, run: RunSummary, lock_timeout: float, spec: PipelineSpec
    ) -> AbstractContextManager[RunTransaction]:
        """Take the pipeline's lock and open the run's transaction, creating or migrating the
        target table to `spec` (recorded in `schema_changes`); rolls back on any error."""

    def end_run(self, run: RunSummary) -> None:
        """Record a run that did not succeed (failed, interrupted) in its own transaction."""

    def runs(
        self, limit: int | None = None, pipeline: str | None = None, unsuccessful: bool = False
    ) -> list[RunSummary]:
        """Run history, newest first; `unsuccessful` keeps runs that ended without success."""

    def get_run(self, run_id: int) -> RunSummary | None:
        """One run, or None."""

    def step_counts(
        self, run_id: int | None = None, pipeline: str | None = None
    ) -> list[StepCount]:
        """Lineage rows per step, for one run or all runs (from per-run counts, not a lineage scan)."""

    def reject_reasons(self, run_id: int) -> dict[str, int]:
        """How many records of a run were rejected per reason code."""

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

    def dead_letter_counts(self, reason: str | None = None) -> dict[str, int]:
        """Unresolved dead letters per pipeline (`reason` as in `dead_letters`)."""

    def lineage(self, key: str, pipeline: str | None = None) -> list[LineageEntry]:
        """Every lineage row for a key across runs, in run and position order."""

    def get_watermark(self, pipeline: str) -> str | None:
        """The stored watermark text of a pipeline."""

    def set_watermark(self, pipeline: str, value: str | None) -> None:
        """Replace (or clear, with None) a pipeline's watermark."""

    def reset_watermark(
        self, pipeline: str, value: str | None, *, expected: str | None, lock_timeout: float
    ) -> None:
        """Replace a pipeline's watermark under the pipeline's lock, so not during a run; raises
        StoreError, changing nothing, if it no longer is `expected` (the value the user saw)."""

    def close(self) -> None:
        """Release the connection."""


def iter_steps(summary: RunSummary) -> Iterator[tuple[str, int]]:
    """A run's lineage rows per step, derived from its counts (each record adds one row per step)."""
    yield "stage", summary.staged
    yield "load", summary.loaded
    yield "stale", summary.stale
    yield "reject", summary.rejected
    yield "skip", summary.skipped


def not_replayed(rows: Sequence[Rejected], update: Callable[[Rejected], int]) -> list[Rejected]:
    """The rejected rows still to insert as dead letters.

    A replayed record names the letter it came from; `update` refreshes that letter (seen count,
    last run, today's reasons; a resolved one opens again, since its bad record came back) and
    returns how many rows it changed. Its edited text has another fingerprint, so inserting it
    would add a duplicate. An id that is no letter of this pipeline changes nothing, and the row
    is inserted as a new letter.
    """
    return [r for r in rows if r.replayed is None or not update(r)]


def refuse_foreign(pipeline: str, foreign: tuple[int, str] | None) -> None:
    """A replay names letters of another pipeline: it was given the wrong --pipeline. Loading
    its records here would file them under this pipeline (or load them into its target)."""
    if foreign is not None:
        letter, owner = foreign
        raise ConfigError(
            f"dead letter {letter} belongs to pipeline {owner!r}, not {pipeline!r}; replay that "
            f"export with --pipeline {owner} (nothing was changed)"
        )


def sightings(rows: Sequence[Rejected]) -> list[tuple[Rejected, int]]:
    """Each distinct bad record (by fingerprint) once, its first row with how often it came."""
    first: dict[str, Rejected] = {}
    counts: Counter[str] = Counter()
    for r in rows:
        first.setdefault(r.fingerprint, r)
        counts[r.fingerprint] += 1
    return [(r, counts[fingerprint]) for fingerprint, r in first.items()]


def check_watermark(pipeline: str, current: str | None, expected: str | None) -> None:
    """A reset replaces the value the user confirmed, not one a run stored since."""
    if current != expected:
        raise StoreError(
            f"the watermark of pipeline {pipeline!r} is now {current or '-'}, not "
            f"{expected or '-'} as read before the reset (a run ended meanwhile); nothing was "
            "changed, so run reset-watermark again"
        )
