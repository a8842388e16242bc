"""The orchestrator: source -> classify -> stage / dead-letter / skip -> merge -> finish, in one transaction."""

import contextlib
import mmap
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from capstone import openlineage, readahead, retention
from capstone.classify import Classifier, header_check, mark_behind
from capstone.config import load_config
from capstone.dead_letters import replay_items
from capstone.errors import (
    CapstoneError,
    ConfigError,
    InputError,
    InterruptedRun,
    LockError,
    MissingDatabase,
    StoreError,
)
from capstone.fates import Batch, Merged
from capstone.inputs import expand_inputs
from capstone.limits import ANOTHER_PIPELINE, MaxRejects, RejectLimit, lacking, over_limit
from capstone.manifest import FileIdentity, LoadedFile, identify
from capstone.model import shape_of
from capstone.sources import Format, Item, SourceFile
from capstone.spec import Delimiter, Duration, PipelineSpec
from capstone.store import RunTransaction, Store, database_files, open_store
from capstone.summary import RunStatus, RunSummary
from capstone.timeutil import earlier, format_ts, later, utcnow
from capstone.watermark import advance, check_stored

__all__ = [
    "MAX_BATCH_SIZE",
    "MAX_LOCK_TIMEOUT",
    "AfterRun",
    "FeedRuns",
    "FileProgress",
    "PipelineStatus",
    "Progress",
    "RunOptions",
    "dismiss_dead_letters",
    "dismiss_matching",
    "feed_files",
    "interrupted_after_commit",
    "load_file",
    "replay",
    "replay_dead_letters",
    "run",
    "run_many",
    "run_source",
    "status",
]

Progress = Callable[[int, int], None]
"""Called as a run starts and after each batch with (records read so far, bytes read so far)."""

AfterRun = Callable[[RunSummary, Store], None]
"""Called once a run has ended with its summary and the store, still open (to read the run log)."""

FileProgress = Callable[[str, int, int], Progress | None]
"""Called as each file of `run_many` starts with (path, its place from 1, files in all); returns
the file's Progress callback, or None."""


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
    force: bool = False
    """Load a file even when the manifest says its content was loaded before."""
    read_ahead: bool | None = None
    """Read and validate in a second process while this one writes (`capstone.readahead`);
    None: when the platform can fork and the input is not Parquet nor under 1 MB."""
    max_rejects: MaxRejects | None = None
    """Fail a file's run past this many rejects (None: the pipeline's `max_rejects`)."""
    delimiter: Delimiter | None = None
    """The CSV delimiter (None: the pipeline's `delimiter`)."""


MAX_BATCH_BYTES = 64 << 20
"""A batch closes once its records' raw text reaches this, whatever --batch-size says: memory
follows the bytes held, so 10,000 records of 1 MB each are never held at once."""


_RESERVE_ABOVE = 1 << 20
"""Records larger than this first check that memory is left to validate and store them."""

_COPIES = 8
"""About how many times its raw size a record takes while it is validated and stored."""


def _reserve_for(size: int) -> None:
    """MemoryError unless room for a record of `size` bytes can be had. The Rust parts
    (pydantic-core's JSON parser, orjson) do not fail cleanly when an allocation fails: they
    abort or crash the process. So a large record's memory is asked for first, as an anonymous
    map never touched (it costs no resident memory), where a refusal is a clean MemoryError."""
    try:
        mmap.mmap(-1, _COPIES * size).close()
    except OSError:
        raise MemoryError from None


_AHEAD_SHARE_OF_BYTES = 4
"""With a reader, a batch closes at this fraction of MAX_BATCH_BYTES: a batch crossing the pipe
is held pickled and whole at once on each side, and each process has one in hand and one in
flight."""


def _batches(items: Iterable[Item], size: int, ahead: bool = False) -> Iterator[list[Item]]:
    """Lists of at most `size` items and, past the first, at most MAX_BATCH_BYTES of raw text
    (a quarter of it when a reader sends them over)."""
    bound = MAX_BATCH_BYTES // _AHEAD_SHARE_OF_BYTES if ahead else MAX_BATCH_BYTES
    batch: list[Item] = []
    held = 0
    for item in items:
        length = len(item[1])
        if length > _RESERVE_ABOVE:
            _reserve_for(length)
        batch.append(item)
        held += length
        if len(batch) >= size or held >= bound:
            yield batch
            batch, held = [], 0
    if batch:
        yield batch


_FORMAT_NAMES = {
    "json": "a JSON array",
    "jsonl": "JSON Lines",
    "parquet": "Parquet",
    None: "not CSV",
}


def _source(path: str, options: RunOptions, spec: PipelineSpec) -> SourceFile:
    """The input file as the pipeline reads it: its format, delimiter and header check."""
    return SourceFile(
        path,
        options.format,
        delimiter=options.delimiter or spec.delimiter,
        check_header=header_check(spec),
        max_record_bytes=spec.max_record_bytes,
    )


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
    on_commit: AfterRun | None = None,
    on_failure: AfterRun | None = None,
) -> RunSummary:
    """Load one file into the database at `db` and return the run's summary.

    The pipeline is `spec` when given, else the one `options.pipeline` names in ./capstone.toml
    (`events`, the seed's shape, needs no config).

    `on_commit` is called after the run's COMMIT, before the store closes; a Ctrl-C during it
    raises the InterruptedRun that says the run is kept. `on_failure` is called with the run-log
    row of a run that failed or was interrupted, before its error is raised; the run's error
    wins over any CapstoneError of its own.
    """
    options = options or RunOptions()
    pipeline = resolve_pipeline(options, spec)
    file = None if replay else identify(input_path)
    with contextlib.ExitStack() as opened:
        try:
            source = opened.enter_context(_source(input_path, options, pipeline))
        except InputError as error:
            if replay or not os.path.isfile(input_path):
                raise
            _log_unreadable(db, pipeline.name, input_path, error, on_failure)
            raise
        if options.delimiter is not None and source.format != "csv":
            # Given for one file that is not CSV, it would be ignored: a mistake about the file.
            raise ConfigError(
                f"--delimiter applies to CSV, and {source.name} is {_FORMAT_NAMES[source.format]}; "
                "drop --delimiter, or add --format csv if the file is CSV"
            )
        return _in_store(
            open_store(db),
            lambda store: run_source(
                source, store, options, progress, replay=replay, spec=pipeline, file=file
            ),
            on_commit,
            on_failure,
        )


def _log_unreadable(
    db: str, pipeline: str, path: str, error: InputError, on_failure: AfterRun | None
) -> None:
    """Log a file that exists but cannot be read as input (damaged compression, not text) as a
    failed run, as a folder's file would be, and hand its row to `on_failure`: a scheduler
    reading the run log or --output sees the failure. The input's error stays the one raised,
    also when the database cannot log it."""

    def logged(store: Store) -> RunSummary:
        _failed_file(store, pipeline, path, error)
        raise error

    with contextlib.suppress(CapstoneError):
        _in_store(open_store(db), logged, None, on_failure)


class FeedRuns(BaseModel):
    """What `run_many` did: one run per file it reached, in input order."""

    runs: list[RunSummary]
    """Each file's run as the run log has it (a failed file's run is logged failed)."""
    unread: list[str] = []
    """Files left alone because an earlier file failed (without `keep_going`)."""

    @property
    def failed(self) -> list[RunSummary]:
        return [r for r in self.runs if r.status != RunStatus.SUCCESS]


def run_many(
    inputs: Sequence[str],
    db: str = "capstone.db",
    options: RunOptions | None = None,
    progress: FileProgress | None = None,
    *,
    spec: PipelineSpec | None = None,
    keep_going: bool = False,
    on_file: Callable[[RunSummary], None] | None = None,
) -> FeedRuns:
    """Load each file `expand_inputs(inputs)` names as its own run (own transaction, run-log row
    and summary), in order, into the database at `db`.

    A file that fails is rolled back and logged failed; the files before it stay committed.
    Without `keep_going` the files after it are left unread (`FeedRuns.unread`). `on_file` is
    called with each file's summary as its run ends. A Ctrl-C rolls back the current file only
    and raises InterruptedRun naming the runs that were committed.
    """
    options = options or RunOptions()
    pipeline = resolve_pipeline(options, spec)
    files = feed_files(inputs, db)
    done: list[RunSummary] = []
    prefetched: _Prefetch | None = None
    with open_store(db) as store, store.feed():
        try:
            for place, path in enumerate(files, 1):
                tracker = None if progress is None else progress(path, place, len(files))
                following = files[place] if place < len(files) else None
                this, prefetched = prefetched, None

                def read_next(following: str | None = following) -> None:
                    nonlocal prefetched
                    if following is not None:
                        prefetched = _prefetch(following, store, options, pipeline)

                try:
                    summary = load_file(store, path, options, pipeline, tracker, this, read_next)
                except InterruptedRun as error:
                    raise _interrupted_feed(error, done) from None
                except LockError as error:
                    if error.run_id is None:
                        raise
                    summary = _failed_file(store, pipeline.name, path, error)
                done.append(summary)
                if on_file is not None:
                    on_file(summary)
                if summary.status != RunStatus.SUCCESS and not keep_going:
                    return FeedRuns(runs=done, unread=files[place:])
        finally:
            if prefetched is not None:  # the feed stopped before the file read ahead
                prefetched.close()
    return FeedRuns(runs=done)


@dataclass
class _Prefetch:
    """The next file of a feed, opened and being read and validated by a forked reader while
    the run before it merges and commits: validating depends on nothing a run writes (the
    watermark's marks are made as batches arrive, `classify.mark_behind`)."""

    path: str
    file: FileIdentity | None
    source: SourceFile
    classifier: Classifier
    reader: "readahead.ReadAhead[Any, Any]"
    _opened: contextlib.ExitStack

    def close(self) -> None:
        """Stop the reader (done or not) and close the file."""
        self._opened.close()


def _prefetch(path: str, store: Store, options: RunOptions, spec: PipelineSpec) -> _Prefetch | None:
    """Start reading `path` ahead; None where it would not be read ahead (small, Parquet, no
    fork) or cannot be opened (its own run then says why, as without a prefetch)."""
    opened = contextlib.ExitStack()
    try:
        file = identify(path)
        source = opened.enter_context(_source(path, options, spec))
        if not _reads_ahead(options, source):
            opened.close()
            return None
        classifier = Classifier(
            later(utcnow(), _future_tolerance(spec, options)),
            screen=store.run_class.screen_for(spec),
            shape=shape_of(spec),
            csv=source.format == "csv",
        )
        produce = _classified(
            classifier, source.records(), options.batch_size, source.bytes_read, ahead=True
        )
        reader = opened.enter_context(readahead.read_ahead(produce, source.content_read))
    except CapstoneError:
        opened.close()
        return None
    except BaseException:
        opened.close()
        raise
    return _Prefetch(path, file, source, classifier, reader, opened)


def _future_tolerance(spec: PipelineSpec, options: RunOptions) -> timedelta:
    """How far past now an event time may be: the run's option, else the pipeline's."""
    return spec.future_tolerance if options.future_tolerance is None else options.future_tolerance


def feed_files(inputs: Sequence[str], db: str) -> list[str]:
    """The files `run_many` loads: `expand_inputs(inputs)` without the database's own files (a
    landing folder may hold the SQLite database)."""
    own = {os.path.realpath(path) for path in database_files(db)}
    files = [path for path in expand_inputs(inputs) if os.path.realpath(path) not in own]
    if not files:
        raise ConfigError(f"--input names only the database {db}; give the files to load")
    return files


def load_file(
    store: Store,
    path: str,
    options: RunOptions,
    spec: PipelineSpec,
    progress: Progress | None = None,
    prefetched: _Prefetch | None = None,
    read_next: Callable[[], None] | None = None,
) -> RunSummary:
    """Load one file of a feed as its own run through the manifest and return its run-log row,
    whether it succeeded or failed (a file that failed before its run began is logged failed
    too). Raises InterruptedRun on Ctrl-C, LockError when another run held the pipeline or the
    database too long (a failed run may be logged: try again later), and StoreError when the
    database cannot log a run at all."""
    try:
        return _run_file(store, path, options, progress, spec, prefetched, read_next)
    except (InterruptedRun, LockError):
        raise
    except CapstoneError as error:
        if isinstance(error, StoreError) and error.run_id is None:
            raise
        return _failed_file(store, spec.name, path, error)


def _run_file(
    store: Store,
    path: str,
    options: RunOptions,
    progress: Progress | None,
    spec: PipelineSpec,
    prefetched: _Prefetch | None = None,
    read_next: Callable[[], None] | None = None,
) -> RunSummary:
    """Load `path` (being read already when `prefetched`); `read_next` starts the next file's
    reader once this file is read."""
    if prefetched is not None and prefetched.path == path:
        try:
            return _execute_source(
                prefetched.source,
                store,
                options,
                progress,
                spec,
                prefetched.file,
                prefetched,
                read_next,
            )
        finally:
            prefetched.close()
    file = identify(path)
    with _source(path, options, spec) as source:
        return _execute_source(source, store, options, progress, spec, file, None, read_next)


def _execute_source(
    source: SourceFile,
    store: Store,
    options: RunOptions,
    progress: Progress | None,
    spec: PipelineSpec,
    file: FileIdentity | None,
    prefetched: _Prefetch | None = None,
    read_next: Callable[[], None] | None = None,
    *,
    replay: bool = False,
) -> RunSummary:
    return _execute(
        store,
        spec,
        options,
        source.name,
        lambda _tx: source.records(),
        source=source,
        progress=progress,
        bytes_read=source.bytes_read,
        replay=replay,
        csv=source.format == "csv",
        file=file,
        prefetched=prefetched,
        read_next=read_next,
    )


def _failed_file(store: Store, pipeline: str, path: str, error: CapstoneError) -> RunSummary:
    """The run-log row of a file that failed; one is logged for a file that failed before its
    run began (unreadable, not text), so that every file of a feed has its row."""
    if error.run_id is None:
        name = "<stdin>" if path == "-" else path
        run = store.begin_run(pipeline, name)
        _record_end(store, run, RunStatus.FAILED, str(error), time.perf_counter())
        error.run_id = run.run_id
    ended = store.get_run(error.run_id)
    if ended is None:  # pragma: no cover - the row was just written
        raise error
    return ended


def _interrupted_feed(error: InterruptedRun, done: Sequence[RunSummary]) -> InterruptedRun:
    kept = [str(r.run_id) for r in done if r.status == RunStatus.SUCCESS]
    if not kept:
        return error
    feed = InterruptedRun(
        f"{error}; the {len(kept)} earlier file run(s) of this invocation stay committed "
        f"(runs {', '.join(kept)})"
    )
    feed.run_id = error.run_id
    return feed


def replay(
    db: str = "capstone.db",
    options: RunOptions | None = None,
    *,
    reason: str | None = None,
    ids: Sequence[int] | None = None,
    first_run: int | None = None,
    spec: PipelineSpec | None = None,
    on_commit: AfterRun | None = None,
    on_failure: AfterRun | None = None,
) -> RunSummary:
    """Re-validate the stored dead letters of the database at `db`, which must exist, as
    `replay_dead_letters` does, and return the run's summary; `on_commit` and `on_failure` as
    in `run`."""
    options = options or RunOptions()
    return _in_store(
        open_store(db, create=False),
        lambda store: replay_dead_letters(
            store, options, reason=reason, ids=ids, first_run=first_run, spec=spec
        ),
        on_commit,
        on_failure,
    )


def _in_store(
    store: Store,
    work: Callable[[Store], RunSummary],
    on_commit: AfterRun | None,
    on_failure: AfterRun | None = None,
) -> RunSummary:
    """Do one run's `work` in `store` and close the store, calling on_commit or on_failure first."""
    try:
        summary = work(store)
    except CapstoneError as error:
        with contextlib.closing(store):
            if on_failure is not None and error.run_id is not None:
                # A broken database: the run's error says why.
                with contextlib.suppress(CapstoneError):
                    ended = store.get_run(error.run_id)
                    if ended is not None:
                        on_failure(ended, store)
        raise
    except BaseException:
        store.close()
        raise
    # Closing checkpoints the WAL, which can take a while after a large run: still after COMMIT.
    with _kept(summary), contextlib.closing(store):
        if on_commit is not None:
            on_commit(summary, store)
    return summary


@contextlib.contextmanager
def _kept(summary: RunSummary) -> Iterator[None]:
    """Around what follows a run's COMMIT: an interrupt there must say the run is kept."""
    try:
        yield
    except KeyboardInterrupt:
        raise interrupted_after_commit(summary) from None


def run_source(
    source: SourceFile,
    store: Store,
    options: RunOptions,
    progress: Progress | None = None,
    *,
    replay: bool = False,
    spec: PipelineSpec | None = None,
    file: FileIdentity | None = None,
) -> RunSummary:
    """Run the pipeline over an opened source; on any error roll back and log the run as failed.

    `replay=True` loads an edited dead-letter export: nothing is skipped by the watermark, and
    records carrying `_dead_letter` ids resolve those dead letters when they are staged.

    With the source's `file` identity the run goes through the manifest: content the pipeline
    loaded before is skipped whole, unread (unless `options.force`), and a loaded file is
    recorded with its data.
    """
    pipeline = resolve_pipeline(options, spec)
    return _execute_source(source, store, options, progress, pipeline, file, replay=replay)


def replay_dead_letters(
    store: Store,
    options: RunOptions,
    *,
    reason: str | None = None,
    ids: Sequence[int] | None = None,
    first_run: int | None = None,
    spec: PipelineSpec | None = None,
) -> RunSummary:
    """Re-validate stored dead letters under today's rules, as a run of their pipeline
    (filtered by reason code substring, ids, and the run that first wrote them).

    Accepted records are merged (the timestamp guard still applies, the watermark does not) and
    their dead letters marked resolved by this run; the rest stay, with today's reasons.
    """
    return _execute(
        store,
        resolve_pipeline(options, spec),
        options,
        "replay of dead letters",
        lambda tx: replay_items(tx.replay_candidates(reason, ids, first_run)),
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


def dismiss_matching(
    store: Store,
    options: RunOptions,
    *,
    reason: str | None = None,
    first_run: int | None = None,
    spec: PipelineSpec | None = None,
) -> tuple[RunSummary, int]:
    """Dismiss every open dead letter of the pipeline whose reason contains `reason` and that
    `first_run` first wrote (neither: all of them), in one statement of one logged run; returns
    the run and how many letters it dismissed. None matching raises CapstoneError (no run is
    kept)."""
    pipeline = resolve_pipeline(options, spec)
    dismissed = 0

    def dismiss(tx: RunTransaction) -> list[Item]:
        nonlocal dismissed
        dismissed = tx.dismiss(reason, first_run)
        if not dismissed:
            raise CapstoneError(
                f"no open dead letters of pipeline {pipeline.name} match "
                f"{_selection(reason, first_run)}; `capstone dead-letters --pipeline "
                f"{pipeline.name}` lists the open ones; nothing was dismissed"
            )
        return []

    summary = _execute(
        store,
        pipeline,
        options,
        f"dismissal of dead letters ({_selection(reason, first_run)})",
        dismiss,
    )
    return summary, dismissed


def _selection(reason: str | None, first_run: int | None) -> str:
    parts = ([] if reason is None else [f"reason {reason!r}"]) + (
        [] if first_run is None else [f"first seen in run {first_run}"]
    )
    return ", ".join(parts) or "all"


class PipelineStatus(BaseModel):
    """A pipeline's definition in brief, with its state in a database (None before its first run)."""

    model_config = ConfigDict(frozen=True)

    pipeline: str
    target: str
    key: tuple[str, ...]
    event_time: str
    fields: dict[str, str]
    """Each field's type, in declaration order."""
    unknown: str
    schema_version: int | None = None
    watermark: str | None = None
    last_run: RunSummary | None = None


def status(
    db: str = "capstone.db", specs: Iterable[PipelineSpec] | None = None
) -> list[PipelineStatus]:
    """Each pipeline of `specs` (default: ./capstone.toml's and `events`) with its state in the
    database at `db`; without a database there they are listed all the same, without state."""
    specs = load_config().pipelines.values() if specs is None else specs
    try:
        store = open_store(db, create=False)
    except MissingDatabase:
        return [_status(spec, None) for spec in specs]
    with contextlib.closing(store):
        return [_status(spec, store) for spec in specs]


def _status(spec: PipelineSpec, store: Store | None) -> PipelineStatus:
    last = store.runs(limit=1, pipeline=spec.name) if store else []
    stored = store.pipeline_version(spec.name) if store else None
    return PipelineStatus(
        pipeline=spec.name,
        target=spec.target,
        key=spec.key,
        event_time=spec.event_time,
        fields={name: f.type for name, f in spec.fields.items()},
        unknown=spec.unknown,
        schema_version=None if stored is None else stored[1],
        watermark=store.get_watermark(spec.name) if store else None,
        last_run=last[0] if last else None,
    )


@dataclass
class _Tally:
    """A run's fates so far, batch by batch."""

    watermark: datetime | None = None
    """The watermark the run started from, and the line below which an invalid record may be
    skipped as already rejected (`classify.mark_behind`)."""
    skip_through: datetime | None = None
    staged: int = 0
    rejected: int = 0
    skipped: int = 0
    dead_letters: int = 0
    dead_letters_updated: int = 0
    newest: datetime | None = None
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def records(self) -> int:
        return self.staged + self.rejected + self.skipped

    def add(self, tx: RunTransaction, batch: Batch) -> None:
        """Write one batch's fates through `tx` and count them."""
        mark_behind(batch, self.watermark, self.skip_through)
        if batch.staged:
            tx.stage(batch.staged, batch.behind)
        # Resolve before rejecting: a bad record that comes back in the same batch as the fix
        # of its letter opens the letter again, and the two never cancel out.
        if batch.resolved:
            tx.resolve(batch.resolved)
        if batch.rejected:
            # Behind the watermark, a bad record whose dead letter exists is skipped.
            written = tx.reject(batch.rejected)
            self.dead_letters += written.new_letters
            self.dead_letters_updated += written.updated_letters
            self.reasons.update(code for r in written.rejected for code, _ in r.reasons)
            self.rejected += len(written.rejected)
            self.skipped += len(batch.rejected) - len(written.rejected)
        self.staged += len(batch.staged)
        self.newest = advance(self.newest, batch.newest)

    def counts(self, merged: Merged) -> dict[str, int]:
        """The summary's counts once the merge is done: records it found covered were staged
        only to be checked against the target, and count as skipped."""
        staged, skipped = self.staged - merged.skipped, self.skipped + merged.skipped
        return {
            "input_records": staged + self.rejected + skipped,
            "staged": staged,
            "loaded": merged.loaded,
            "late": merged.late,
            "deleted": merged.deleted,
            "stale": merged.stale,
            "rejected": self.rejected,
            "skipped": skipped,
            "dead_letters": self.dead_letters,
            "dead_letters_updated": self.dead_letters_updated,
        }


def _execute(
    store: Store,
    spec: PipelineSpec,
    options: RunOptions,
    source_name: str,
    items: Callable[[RunTransaction], Iterable[Item]],
    *,
    source: SourceFile | None = None,
    progress: Progress | None = None,
    bytes_read: Callable[[], int] = lambda: 0,
    replay: bool = False,
    csv: bool = False,
    file: FileIdentity | None = None,
    prefetched: "_Prefetch | None" = None,
    read_next: Callable[[], None] | None = None,
) -> RunSummary:
    clock = time.perf_counter()
    if progress is not None:
        progress(0, bytes_read())
    shape = shape_of(spec)
    lookback = spec.lookback if options.lookback is None else options.lookback
    tolerance = _future_tolerance(spec, options)
    # A definition change the stored table cannot take is refused before the run is logged.
    store.check_pipeline(spec)
    run = store.begin_run(spec.name, source_name, options.lock_timeout)
    events = openlineage.run_events()
    started_from: datetime | None = None  # the watermark, once read under the pipeline's lock
    try:
        events.start(run, spec, source, store)
        with store.run_transaction(run, options.lock_timeout, spec) as tx:
            now = utcnow()
            old = started_from = check_stored(spec.name, tx.read_watermark(), now, tolerance)
            loaded = None if file is None or options.force else tx.loaded_content(file.sha256)
            if loaded is not None:
                summary = _same_content(tx, run, loaded, old, clock)
                events.complete(summary, {})
                # It wrote no lineage: the next run that loads something prunes.
                return summary
            skip_through = None if old is None or replay else earlier(old, lookback)
            classifier = (
                prefetched.classifier
                if prefetched is not None
                else Classifier(
                    later(now, tolerance), replay=replay, screen=tx.screen, shape=shape, csv=csv
                )
            )
            tally = _classify_all(
                tx,
                classifier,
                items(tx),
                options,
                spec,
                source_name,
                progress,
                bytes_read,
                _Tally(watermark=old, skip_through=skip_through),
                source if prefetched is not None or _reads_ahead(options, source) else None,
                prefetched,
                read_next,
            )
            skip_text = None if skip_through is None else format_ts(skip_through)
            merged = tx.merge(skip_text, None if old is None else format_ts(old))
            watermark = advance(old, tally.newest)
            summary = run.model_copy(
                update=tally.counts(merged)
                | {
                    "status": RunStatus.SUCCESS,
                    "finished_at": format_ts(utcnow()),
                    "lineage_entries": tx.lineage_entries,
                    "watermark_before": None if old is None else format_ts(old),
                    "watermark": None if watermark is None else format_ts(watermark),
                    "duration_ms": round((time.perf_counter() - clock) * 1000),
                }
            )
            if not summary.is_balanced():
                raise StoreError(f"run {run.run_id} does not balance ({summary}); nothing was kept")
            if file is not None:
                summary = _record_file(tx, _as_read(file, source), summary)
            tx.finish(summary, dict(tally.reasons))
        return _completed(events, summary, tally.reasons, store, spec, options)
    except KeyboardInterrupt:
        ended = _record_end(
            store, run, RunStatus.INTERRUPTED, "interrupted by signal", clock, started_from
        )
        _interrupt_events(events, store, ended)
        raise _interrupted(store, run) from None
    except (CapstoneError, MemoryError) as caught:
        error = _out_of_memory(source_name) if isinstance(caught, MemoryError) else caught
        ended = _record_end(store, run, RunStatus.FAILED, str(error), clock, started_from)
        events.fail(ended, str(error))
        error.run_id = run.run_id
        if error is caught:
            raise
        raise error from None
    except Exception as error:
        message = f"{type(error).__name__}: {error}"
        events.fail(
            _record_end(store, run, RunStatus.FAILED, message, clock, started_from), message
        )
        raise


def _classify_all(
    tx: RunTransaction,
    classifier: Classifier,
    items: Iterable[Item],
    options: RunOptions,
    spec: PipelineSpec,
    source_name: str,
    progress: Progress | None,
    bytes_read: Callable[[], int],
    tally: "_Tally",
    ahead: SourceFile | None = None,
    prefetched: "_Prefetch | None" = None,
    read_next: Callable[[], None] | None = None,
) -> "_Tally":
    """Classify the records batch by batch into the run's transaction, and count them in
    `tally`; with the source `ahead`, a forked reader reads and classifies while this process
    writes (one started before the run when `prefetched`). Once the last record is in,
    `read_next` starts the next file's reader, to read while this run merges and commits."""
    reader = prefetched.reader if prefetched is not None else None
    limit = options.max_rejects or spec.max_rejects
    classified = _classified(classifier, items, options.batch_size, bytes_read, ahead is not None)
    with contextlib.ExitStack() as stack:
        if ahead is None:
            batches: Iterable[tuple[int, Batch | list[Item], int]] = classified(lambda: True)
        else:
            if reader is None:
                reader = stack.enter_context(readahead.read_ahead(classified, ahead.content_read))
            batches = reader
        for number, payload, read in batches:
            batch = (
                payload
                if isinstance(payload, Batch)
                else classifier.classify(payload, number * MAX_BATCH_SIZE)
            )
            tally.add(tx, batch)
            if progress is not None:
                progress(tally.records, read)
            _check_rejects(limit, source_name, tally, spec, final=False)
        if ahead is not None:
            assert reader is not None
            ahead.read_elsewhere(reader.finished)
    if read_next is not None:
        read_next()
    _check_rejects(limit, source_name, tally, spec, final=True)
    if limit is None and not classifier.replay:
        _check_belongs(source_name, tally, spec)
    return tally


def _classified(
    classifier: Classifier,
    items: Iterable[Item],
    batch_size: int,
    bytes_read: Callable[[], int],
    ahead: bool,
) -> Callable[[Callable[[], bool]], Iterator[tuple[int, Batch | list[Item], int]]]:
    """The batches of `items`, each classified, or left raw for the writer (`ahead`: produced
    in a forked reader, while the writer is idle).

    With a reader, a batch it reads while the writer is still busy with the ones before (what
    was sent is not all taken: `readahead._Pace`) it validates itself; one read while the writer waits for work goes
    over unvalidated and is validated there. So both cores validate, in the share that keeps
    them equally busy, whatever the format and the machine. A replay keeps all in one process:
    which letter a record claims depends on the records before it."""

    shared = ahead and not classifier.replay

    def produce(writer_busy: Callable[[], bool]) -> Iterator[tuple[int, Batch | list[Item], int]]:
        for number, chunk in enumerate(_batches(items, batch_size, ahead)):
            if shared and not writer_busy():
                yield number, chunk, bytes_read()
            else:
                yield number, classifier.classify(chunk, number * MAX_BATCH_SIZE), bytes_read()

    return produce


_READ_AHEAD_FROM = 1 << 20
"""Bytes of input from which a forked reader pays for itself (forking takes a few ms)."""


def _reads_ahead(options: RunOptions, source: SourceFile | None) -> bool:
    """Whether to read `source` in a forked reader: never Parquet (pyarrow's threads and memory
    pools are not made to be forked), nor stored dead letters (read through the run's own
    connection)."""
    if source is None or source.format == "parquet" or not readahead.available():
        return False
    if options.read_ahead is not None:
        return options.read_ahead
    size = source.size
    return size is None or size >= _READ_AHEAD_FROM


def _out_of_memory(source_name: str) -> InputError:
    # What failed to fit is let go by now; the run's end can be logged in what is left.
    return InputError(
        f"{source_name}: a batch of this file is too large for the memory available; lower "
        "--batch-size or the pipeline's max_record_bytes, or free memory"
    )


def _completed(
    events: openlineage.RunEvents,
    summary: RunSummary,
    reasons: Counter[str],
    store: Store,
    spec: PipelineSpec,
    options: RunOptions,
) -> RunSummary:
    """After a run's COMMIT: its COMPLETE event, then its pipeline's `keep_lineage`."""
    events.complete(summary, reasons)
    _keep_lineage(store, spec, options)
    return summary


def _keep_lineage(store: Store, spec: PipelineSpec, options: RunOptions) -> None:
    """The pipeline's `keep_lineage`, after a run committed: in a transaction of its own, so a
    prune that fails (a lock held too long, a full disk) rolls back alone and the run stands;
    and the run's own transaction, holding the pipeline's lock, grows no longer by it."""
    if spec.keep_lineage is None:
        return
    try:
        retention.keep_lineage(store, spec.name, spec.keep_lineage, options.lock_timeout)
    except CapstoneError as error:
        sys.stderr.write(
            f"capstone: warning: keep_lineage of pipeline {spec.name} did not prune ({error}); "
            "the run is kept, and the next run or `capstone prune` tries again\n"
        )


def _interrupt_events(events: openlineage.RunEvents, store: Store, run: RunSummary) -> None:
    """ABORT for a run the signal rolled back; COMPLETE (once) for one it caught as it committed."""
    if not _committed(store, run):
        events.abort(run)
        return
    with contextlib.suppress(CapstoneError):
        if (stored := store.get_run(run.run_id)) is not None:
            events.complete(stored, store.reject_reasons(run.run_id))


def _as_read(file: FileIdentity, source: SourceFile | None) -> FileIdentity:
    """The file's identity with the hash and size of the bytes the run read: the content looked
    up before the run began may since have been appended to or rewritten (see
    `capstone.sources._Hashing`)."""
    read = None if source is None else source.content_read()
    if read is None:  # pragma: no cover - the readers read each file once from its start
        return file
    sha256, size = read
    return (
        file
        if (sha256, size) == (file.sha256, file.size)
        else file.model_copy(update={"sha256": sha256, "size": size})
    )


def _record_file(tx: RunTransaction, file: FileIdentity, summary: RunSummary) -> RunSummary:
    """Enter the file in the manifest, in the run's transaction; the summary notes the run that
    loaded the same path with other content before."""
    before = tx.last_load_of(file.resolved_path)
    if before is not None and before.sha256 != file.sha256:
        summary = summary.model_copy(update={"changed_since": before.run_id})
    tx.record_file(file, summary.input_records, summary.finished_at or "")
    return summary


def _check_rejects(
    limit: RejectLimit | None, source: str, tally: _Tally, spec: PipelineSpec, *, final: bool
) -> None:
    """Fail the run once its rejects pass the limit (a percentage only at the end)."""
    if limit is not None and limit.exceeded(tally.rejected, tally.records, final=final):
        raise _too_many_rejects(limit, source, tally, spec)


ALL_REJECTED_MIN_RECORDS = 10
"""A file of at least this many records, none of which loads, fails its run without a reject
limit; fewer are too few to tell a wrong pipeline from a few bad records."""


def _check_belongs(source: str, tally: _Tally, spec: PipelineSpec) -> None:
    """Fail the run of a file none of whose records could be staged: loading it would report
    success with nothing but dead letters. When every record lacks a field the pipeline needs,
    the likely mistake is the pipeline (the seed's `events` given a file of `id`s); otherwise
    the file and the pipeline's declaration disagree (a field the producer stopped sending).
    `--max-rejects 100%` keeps them as letters."""
    if tally.records < ALL_REJECTED_MIN_RECORDS or tally.rejected < tally.records:
        return
    keep = (
        "to keep its records as dead letters anyway, give --max-rejects 100%; the run was "
        "rolled back and nothing was kept"
    )
    missing = lacking((*spec.key, spec.event_time), tally.reasons, tally.records)
    if missing:
        raise InputError(
            f"{source}: none of its {tally.records:,} records has "
            f"{', '.join(repr(f) for f in missing)}, which pipeline {spec.name!r} needs: "
            f"{ANOTHER_PIPELINE}; {keep}"
        )
    common = ", ".join(f"{code} {n:,}" for code, n in tally.reasons.most_common(3))
    raise InputError(
        f"{source}: all {tally.records:,} of its records were rejected ({common}), so pipeline "
        f"{spec.name!r} would load nothing from it: fix the file, or the pipeline's fields in "
        "capstone.toml (`required = false` for a field the file lacks, a wider type); "
        f"{keep}"
    )


def _too_many_rejects(
    limit: RejectLimit, source: str, tally: _Tally, spec: PipelineSpec
) -> InputError:
    required = [*spec.key, spec.event_time]
    return InputError(
        over_limit(limit, source, tally.rejected, tally.records, tally.reasons, required)
    )


def _same_content(
    tx: RunTransaction, run: RunSummary, loaded: LoadedFile, old: datetime | None, clock: float
) -> RunSummary:
    """Finish a run whose file's content an earlier run `loaded`: every record skipped, none
    read, no lineage (the earlier run's lineage has every record)."""
    watermark = None if old is None else format_ts(old)
    summary = run.model_copy(
        update={
            "status": RunStatus.SUCCESS,
            "finished_at": format_ts(utcnow()),
            "input_records": loaded.records,
            "skipped": loaded.records,
            "watermark_before": watermark,
            "watermark": watermark,
            "same_content_as": loaded.run_id,
            "duration_ms": round((time.perf_counter() - clock) * 1000),
        }
    )
    tx.finish(summary, {})
    return summary


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


def _record_end(
    store: Store,
    run: RunSummary,
    status: str,
    error: str,
    clock: float,
    watermark: datetime | None = None,
) -> RunSummary:
    """Log a run that did not succeed. `watermark` is the one it started from, if it got as far
    as reading it: a run that kept nothing leaves it where it was, so it is before and after."""
    mark = None if watermark is None else format_ts(watermark)
    ended = run.model_copy(
        update={
            "status": status,
            "error": error,
            "finished_at": format_ts(utcnow()),
            "duration_ms": round((time.perf_counter() - clock) * 1000),
            "watermark_before": mark,
            "watermark": mark,
        }
    )
    # When the database cannot be written (disk full, locked), the original error matters more.
    with contextlib.suppress(CapstoneError):
        store.end_run(ended)
    return ended
