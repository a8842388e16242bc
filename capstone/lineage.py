"""Lineage: one row for every step a record passes through in a run, found again by its key.

A staged record has two steps (`stage`, then `load` or `stale`), a rejected or skipped one a
single step. The stores count steps as they write; the count is the run's `lineage_entries`.
Details say what decided the step: `ts 2025-01-15T12:00:00` for a record loaded or skipped at that
event time, `kept ts A over B` for a stale one, the reason codes of a reject.

Stored, a record takes one row of `lineage_records` (its fate; `stage` is implied by load, stale
and delete) in a compact form: the step as a small integer (`STEP_CODES`), and a detail that is
only the record's event time (`ts ...`, most rows) as that time in microseconds since 1970 (`ts`),
`detail` left NULL. The `lineage` view reads them back as every step with its text
(`capstone.store.ddl.lineage_view`).
"""

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from pydantic import BaseModel

from capstone.fates import Rejected, Skipped
from capstone.timeutil import parse_ts, to_micros

if TYPE_CHECKING:
    from capstone.summary import RunSummary

__all__ = [
    "LINEAGE_COLUMNS",
    "STEPS",
    "STEP_CODES",
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


STEP_CODES = {"load": 1, "stale": 2, "delete": 3, "reject": 4, "skip": 5}
"""How `lineage_records` stores each fate (SQLite stores 1, the most common, in no byte at all)."""

LineageRow = tuple[int, int, str | None, int, int | None, str | None]
"""(run_id, step code, key, position, ts in microseconds, detail), as `lineage_records` takes it:
a detail that would read `ts TIME` is stored as TIME's microseconds, the detail left NULL."""

LINEAGE_COLUMNS = ("run_id", "step", "key", "position", "ts", "detail")


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
    reject = STEP_CODES["reject"]
    for r in rows:
        key = None if r.key is None else clean(r.key)
        yield run_id, reject, key, r.position, None, clean(r.codes)


def of_skips(
    run_id: int, rows: Iterable[Skipped], clean: Callable[[str], str]
) -> Iterator[LineageRow]:
    """The `skip` rows of records an earlier run had, with the event time that said so."""
    skip = STEP_CODES["skip"]
    for position, key, ts in rows:
        yield (
            run_id,
            skip,
            None if key is None else clean(key),
            position,
            to_micros(parse_ts(ts)),
            None,
        )


def iter_steps(summary: "RunSummary") -> Iterator[tuple[str, int]]:
    """A run's lineage rows per step, from its counts (each record adds one row per step)."""
    yield "stage", summary.staged
    yield "load", summary.loaded - summary.deleted
    yield "delete", summary.deleted
    yield "stale", summary.stale
    yield "reject", summary.rejected
    yield "skip", summary.skipped
