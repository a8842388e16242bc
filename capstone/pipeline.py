"""The orchestrator: source -> classify -> stage / dead-letter / skip -> merge -> finish, in one transaction."""

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from capstone.classify import Classifier
from capstone.config import load_config
from capstone.dead_letters import replay_items
from capstone.errors import CapstoneError, InterruptedRun, StoreError
from capstone.schema import Duration, PipelineSpec, shape_of
from capstone.sources import Format, Item, SourceFile
from capstone.store import RunTransaction, Store, open_store
from capstone.summary import RunStatus, RunSummary
from capstone.timeutil import earlier, format_ts, later, utcnow
from capstone.watermark import advance, check_stored

__all__ = [
    "MAX_BATCH_SIZE",
    "MAX_LOCK_TIMEOUT",
    "Progress",
    "RunOptions",
    "dismiss_dead_letters",
    "interrupted_after_commit",
    "replay_dead_letters",
    "run",
    "run_source",
]

Progress = Callable[[int, int], None]
"""Called after each batch with (records read so far, bytes read so far)."""

T = TypeVar("T")

MAX_BATCH_SIZE = 1_000_000
"""A batch is held in memory while it is validated; beyond this, memory would follow the input."""

MAX_LOCK_TIMEOUT = 86_400.0
"""A day: long enough for any run to finish, and within what SQLite's busy timeout can hold."""


class RunOptions(BaseModel):
    """How one run behaves; every field has the CLI's default.

    `lookback` and `future_tolerance` left as None take the pipeline's settings.
    """

    model_config = ConfigDict(frozen=True)

    pipeline: str = Field("events", min_length=1, max_length=128)
    lookback: Duration | None = None
    future_tolerance: Duration | None = None
    format: Format | None = None
    batch_size: int = Field(10_000, ge=1, le=MAX_BATCH_SIZE)
    lock_timeout: float = Field(5.0, ge=0, le=MAX_LOCK_TIMEOUT)


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def resolve_pipeline(options: RunOptions, spec: PipelineSpec | None = None) -> PipelineSpec:
    """The definition a run uses: `spec` when given, else `options.pipeline` from ./capstone.toml."""
    return spec if spec is not None else load_config().pipeline(options.pipeline)


def run(
    input_path: str,
    db: str = "capstone.db",
    options: RunOptions | None = None,
    progress: Progress | None = None,
    *,
    replay: bool = False,
    spec: PipelineSpec | None = None,
) -> RunSummary:
    """Load one file into the database at `db` and return the run's summary.

    The pipeline is `spec` when given, else the one `options.pipeline` names in ./capstone.toml
    (`events`, the seed's shape, needs no config).
    """
    options = options or RunOptions()
    pipeline = resolve_pipeline(options, spec)
    source = SourceFile(input_path, options.format)
    with source:
        store = open_store(db)
        try:
            summary = run_source(source, store, options, progress, replay=replay, spec=pipeline)
        except BaseException:
            store.close()
            raise
        try:
            # Closing checkpoints the WAL, which can take a while after a large run.
            store.close()
        except KeyboardInterrupt:
            raise interrupted_after_commit(summary) from None
        return summary


def run_source(
    source: SourceFile,
    store: Store,
    options: RunOptions,
    progress: Progress | None = None,
    *,
    replay: bool = False,
    spec: PipelineSpec | None = None,
) -> RunSummary:
    """Run the pipeline over an opened source; on any error roll back and log the run as failed.

    `replay=True` loads an edited dead-letter export: nothing is skipped by the watermark, and
    records carrying `_dead_letter` ids resolve those dead letters when they are staged.
    """
    return _execute(
        store,
        resolve_pipeline(options, spec),
        options,
        source.name,
        lambda _tx: source.records(),
        progress=progress,
        bytes_read=source.bytes_read,
        replay=replay,
        csv=source.format == "csv",
    )


def replay_dead_letters(
    store: Store,
    options: RunOptions,
    *,
    reason: str | None = None,
    ids: Sequence[int] | None = None,
    spec: PipelineSpec | None = None,
) -> RunSummary:
    """Re-validate stored dead letters under today's rules, as a run of their pipeline.

    Accepted records are merged (the timestamp guard still applies, the watermark does not) and
    their dead letters marked resolved by this run; the rest stay, with today's reasons.
    """
    return _execute(
        store,
        resolve_pipeline(options, spec),
        options,
        "replay of dead letters",
        lambda tx: replay_items(tx.replay_candidates(reason, ids)),
        replay=True,
    )


def dismiss_dead_letters(
    store: Store,
    options: RunOptions,
    ids: Sequence[int],
    *,
    spec: PipelineSpec | None = None,
) -> RunSummary:
    """Mark open dead letters resolved without loading anything, as a logged run of their
    pipeline: for records fixed where they came from (a CSV row with the wrong number of cells)
    or not worth keeping. Every id must be an open letter of the pipeline, or nothing changes."""
    pipeline = resolve_pipeline(options, spec)

    def dismiss(tx: RunTransaction) -> list[Item]:
        found = {letter.id for letter in tx.replay_candidates(None, ids)}
        if missing := sorted(set(ids) - found):
            shown = ", ".join(str(n) for n in missing)
            raise CapstoneError(
                f"dead letter {shown} {'is' if len(missing) == 1 else 'are'} not open in pipeline "
                f"{pipeline.name}; `capstone dead-letters --pipeline {pipeline.name}` lists the "
                "open ones; nothing was dismissed"
            )
        tx.resolve(sorted(found))
        return []

    listed = ", ".join(str(n) for n in sorted(set(ids))[:10]) + (
        "..." if len(set(ids)) > 10 else ""
    )
    return _execute(store, pipeline, options, f"dismissal of dead letters {listed}", dismiss)


def _execute(
    store: Store,
    spec: PipelineSpec,
    options: RunOptions,
    source_name: str,
    items: Callable[[RunTransaction], Iterable[Item]],
    *,
    progress: Progress | None = None,
    bytes_read: Callable[[], int] = lambda: 0,
    replay: bool = False,
    csv: bool = False,
) -> RunSummary:
    clock = time.perf_counter()
    shape = shape_of(spec)
    lookback = spec.lookback if options.lookback is None else options.lookback
    tolerance = (
        spec.future_tolerance if options.future_tolerance is None else options.future_tolerance
    )
    # A definition change the stored table cannot take is refused before the run is logged.
    store.check_pipeline(spec)
    run = store.begin_run(spec.name, source_name, options.lock_timeout)
    try:
        with store.run_transaction(run, options.lock_timeout, spec) as tx:
            now = utcnow()
            old = check_stored(spec.name, tx.read_watermark(), now, tolerance)
            skip_through = None if old is None or replay else earlier(old, lookback)
            classifier = Classifier(
                skip_through=skip_through,
                future_limit=later(now, tolerance),
                replay=replay,
                screen=tx.screen,
                shape=shape,
                csv=csv,
                watermark=old,
            )
            staged = rejected = skipped = dead_letters = 0
            reasons: Counter[str] = Counter()
            newest = None
            for chunk in _batches(items(tx), options.batch_size):
                batch = classifier.classify(chunk)
                if batch.staged:
                    tx.stage(batch.staged, batch.behind)
                # Resolve before rejecting: a bad record that comes back in the same batch as
                # the fix of its letter opens the letter again, and the two never cancel out.
                if batch.resolved:
                    tx.resolve(batch.resolved)
                if batch.rejected:
                    # Behind the watermark, a bad record whose dead letter exists is skipped.
                    written = tx.reject(batch.rejected)
                    dead_letters += written.new_letters
                    reasons.update(code for r in written.rejected for code, _ in r.reasons)
                    rejected += len(written.rejected)
                    skipped += len(batch.rejected) - len(written.rejected)
                staged += len(batch.staged)
                newest = advance(newest, batch.newest)
                if progress is not None:
                    progress(staged + rejected + skipped, bytes_read())
            skip_text = None if skip_through is None else format_ts(skip_through)
            merged = tx.merge(skip_text, None if old is None else format_ts(old))
            # Covered records were staged only to be checked against the target.
            staged -= merged.skipped
            skipped += merged.skipped
            watermark = advance(old, newest)
            summary = run.model_copy(
                update={
                    "status": RunStatus.SUCCESS,
                    "finished_at": format_ts(utcnow()),
                    "input_records": staged + rejected + skipped,
                    "staged": staged,
                    "loaded": merged.loaded,
                    "late": merged.late,
                    "stale": merged.stale,
                    "rejected": rejected,
                    "skipped": skipped,
                    "dead_letters": dead_letters,
                    "lineage_entries": tx.lineage_entries,
                    "watermark_before": None if old is None else format_ts(old),
                    "watermark": None if watermark is None else format_ts(watermark),
                    "duration_ms": round((time.perf_counter() - clock) * 1000),
                }
            )
            if not summary.is_balanced():
                raise StoreError(f"run {run.run_id} does not balance ({summary}); nothing was kept")
            tx.finish(summary, dict(reasons))
        return summary
    except KeyboardInterrupt:
        _record_end(store, run, RunStatus.INTERRUPTED, "interrupted by signal", clock)
        raise _interrupted(store, run) from None
    except CapstoneError as error:
        _record_end(store, run, RunStatus.FAILED, str(error), clock)
        error.run_id = run.run_id
        raise
    except Exception as error:
        _record_end(store, run, RunStatus.FAILED, f"{type(error).__name__}: {error}", clock)
        raise


def _interrupted(store: Store, run: RunSummary) -> InterruptedRun:
    if _committed(store, run):
        # The signal arrived as COMMIT returned: the run is whole, and saying otherwise would
        # contradict the data.
        error = interrupted_after_commit(run)
    else:
        error = InterruptedRun(
            f"run {run.run_id} was interrupted and rolled back; nothing was changed"
        )
    error.run_id = run.run_id
    return error


def _committed(store: Store, run: RunSummary) -> bool:
    with contextlib.suppress(CapstoneError):
        stored = store.get_run(run.run_id)
        return stored is not None and stored.status == RunStatus.SUCCESS
    return False


def interrupted_after_commit(run: RunSummary) -> InterruptedRun:
    """The error for a signal that came once `run` had committed: its results are kept."""
    error = InterruptedRun(
        f"interrupted after run {run.run_id} committed; its results are kept "
        f"(capstone runs {run.run_id} shows them)"
    )
    error.run_id = run.run_id
    return error


def _record_end(store: Store, run: RunSummary, status: str, error: str, clock: float) -> None:
    ended = run.model_copy(
        update={
            "status": status,
            "error": error,
            "finished_at": format_ts(utcnow()),
            "duration_ms": round((time.perf_counter() - clock) * 1000),
        }
    )
    # When the database cannot be written (disk full, locked), the original error matters more.
    with contextlib.suppress(CapstoneError):
        store.end_run(ended)
