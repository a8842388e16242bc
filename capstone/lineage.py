"""Lineage: one row for every step a record passes through in a run, found again by its key.

A staged record gets two rows (`stage`, then `load` or `stale`), a rejected or skipped one a
single row. The stores write these rows and count them as they write; the count is the run's
`lineage_entries`. Details say what decided the step: `ts 2025-01-15T12:00:00` for a record loaded
or skipped at that event time, `kept ts A over B` for a stale one, the reason codes of a reject.
"""

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from pydantic import BaseModel

from capstone.fates import Rejected, Skipped

if TYPE_CHECKING:
    from capstone.summary import RunSummary

__all__ = [
    "STEPS",
    "LineageEntry",
    "LineageRow",
    "StepCount",
    "iter_steps",
    "of_rejects",
    "of_skips",
    "reported_steps",
]

STEPS = ("stage", "load", "delete", "stale", "reject", "skip")
"""Lineage steps, in the order a record can pass through them."""


def reported_steps(found: dict[str, int]) -> list[str]:
    """The steps a report lists: all of them, but `delete` only where a pipeline with
    tombstones has taken it (every other pipeline's reports keep their shape)."""
    return [step for step in STEPS if step != "delete" or found.get(step)]


LineageRow = tuple[int, str, str | None, int, str | None]
"""(run_id, step, key, position, detail), as the `lineage` table takes it."""

LINEAGE_COLUMNS = ("run_id", "step", "key", "position", "detail")


class LineageEntry(BaseModel):
    """One step one record went through in one run, with the run's source."""

    run_id: int
    pipeline: str
    source: str | None
    started_at: str | None
    step: str
    key: str | None
    position: int
    detail: str | None


class StepCount(BaseModel):
    """Lineage rows of one step (stage, load, stale, reject, skip)."""

    step: str
    count: int


def of_rejects(
    run_id: int, rows: Iterable[Rejected], clean: Callable[[str], str]
) -> Iterator[LineageRow]:
    """The `reject` rows of dead-lettered records; `clean` makes text storable by the backend."""
    for r in rows:
        yield run_id, "reject", None if r.key is None else clean(r.key), r.position, clean(r.codes)


def of_skips(
    run_id: int, rows: Iterable[Skipped], clean: Callable[[str], str]
) -> Iterator[LineageRow]:
    """The `skip` rows of records an earlier run had, with the event time that said so."""
    for position, key, ts in rows:
        yield run_id, "skip", None if key is None else clean(key), position, f"ts {ts}"


def iter_steps(summary: "RunSummary") -> Iterator[tuple[str, int]]:
    """A run's lineage rows per step, from its counts (each record adds one row per step)."""
    yield "stage", summary.staged
    yield "load", summary.loaded - summary.deleted
    yield "delete", summary.deleted
    yield "stale", summary.stale
    yield "reject", summary.rejected
    yield "skip", summary.skipped
