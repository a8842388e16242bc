"""`capstone run` loads a file; `capstone replay` loads stored dead letters again."""

import os
import shlex
import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

import capstone.pipeline
from capstone.cli._errors import handle_errors
from capstone.cli._options import (
    ConfigPath,
    Db,
    Delimiter,
    Json,
    LockTimeout,
    Pipeline,
    Quiet,
    check_output_mode,
    check_writable,
    fits_64_bits,
    is_stdout,
)
from capstone.cli._output import all_steps, console, plural, print_json, stdout_to_nowhere
from capstone.cli.render import feed_table, steps_table, summary_table, visible
from capstone.config import load_config
from capstone.errors import CapstoneError, ConfigError
from capstone.inputs import names_many
from capstone.limits import RejectLimit
from capstone.metrics import write_metrics
from capstone.pipeline import MAX_BATCH_SIZE, RunOptions, feed_files
from capstone.sources import FORMATS, Format, SourceFile
from capstone.spec import PipelineSpec, parse_delimiter
from capstone.store import Store
from capstone.summary import RunSummary
from capstone.timeutil import parse_duration, utcnow

__all__ = ["replay", "run"]

MetricsFile = Annotated[
    Path | None,
    typer.Option(
        "--metrics-file",
        help="Also write the run's counters and duration here in the Prometheus text format "
        "(node_exporter's textfile collector), atomically; failed runs too. One run's: not with "
        "a folder, a glob or many --input.",
        metavar="FILE",
    ),
]


@handle_errors
def run(
    inputs: Annotated[
        list[str],
        typer.Option(
            "--input",
            "-i",
            help="File to load (JSON array, JSON Lines or CSV, plain or gzip/bzip2/xz/zstd; Parquet), - for "
            "stdin, a folder, or a quoted glob ('landing/**/*.gz'); repeatable: one run per file.",
            metavar="FILE|-|FOLDER|GLOB",
        ),
    ],
    db: Db = "capstone.db",
    pipeline: Pipeline = "events",
    config: ConfigPath = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Also write the summary and the run log here as JSON (- for stdout, instead "
            "of the table).",
            metavar="FILE|-",
        ),
    ] = None,
    lookback: Annotated[
        str | None,
        typer.Option(
            help="Stage records this far behind the watermark without checking whether an "
            "earlier run had them (90s, 15m, 2h, 3d); late records load without it "
            "(default: the pipeline's, 0 for events).",
            metavar="DURATION",
        ),
    ] = None,
    input_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="json, jsonl, csv or parquet; detected from content when omitted.",
            metavar="json|jsonl|csv|parquet",
        ),
    ] = None,
    future_tolerance: Annotated[
        str | None,
        typer.Option(
            help="Reject records whose event time is later than now plus this "
            "(default: the pipeline's, 1d for events).",
            metavar="DURATION",
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, max=MAX_BATCH_SIZE, help="Records per staging batch.", metavar="N")
    ] = 10_000,
    lock_timeout: LockTimeout = 5.0,
    report: Annotated[
        bool, typer.Option("--report", help="Also print lineage grouped by step.", metavar="")
    ] = False,
    replay: Annotated[
        bool,
        typer.Option(
            "--replay",
            help="Load an edited dead-letter export: ignore the watermark, resolve.",
            metavar="",
        ),
    ] = False,
    max_rejects: Annotated[
        str | None,
        typer.Option(
            "--max-rejects",
            help="Fail a file's run, keeping nothing, when more of its records than this are "
            "rejected: a count (100) or a percentage (5%) (default: the pipeline's; without one, "
            "only a file of 10+ records none of which loads fails; 100% keeps those as letters).",
            metavar="N|N%",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Load a file even if the pipeline loaded the same content before (the file "
            "manifest, `capstone files`, would skip it unread).",
            metavar="",
        ),
    ] = False,
    read_ahead: Annotated[
        bool | None,
        typer.Option(
            "--read-ahead/--no-read-ahead",
            help="Read and validate in a second process while this one writes, using both cores "
            "(default: for inputs of 1 MB or more, except Parquet).",
            show_default=False,
            metavar="",
        ),
    ] = None,
    keep_going: Annotated[
        bool,
        typer.Option(
            "--keep-going",
            help="With many files: after a file fails, go on with the next (still exit 1).",
            metavar="",
        ),
    ] = False,
    delimiter: Delimiter = None,
    as_json: Json = False,
    quiet: Quiet = False,
    metrics_file: MetricsFile = None,
) -> None:
    """Load a file: validate, dead-letter rejects, stage, merge newest-wins, advance the watermark.

    Many files (repeated --input, a folder, a glob) load one run each, in order.

    Every record gets one fate. Staged records go to the merge: loaded ones changed the target
    (late: behind the watermark; deleted: tombstones, with the pipeline's delete_field), stale
    ones lost to a newer event time (on a tie, the pipeline's ties rule decides). Rejected ones
    are dead letters. Skipped ones an earlier run had: the target holds them or a newer version,
    or their dead letter exists.

    dead_letters counts new letters: bad records no earlier run had rejected. dead_letters_updated
    counts letters of earlier runs this run saw again (the same bad record, or a replay that still
    fails): each letter is kept once, its count and reasons updated.

    Example: capstone run --input data/sample_input.txt --output data/output_summary.json
    """
    check_output_mode(as_json, quiet)
    if input_format is not None and input_format not in FORMATS:
        raise ConfigError(f"--format must be json, jsonl, csv or parquet, not {input_format!r}")
    fmt: Format | None = input_format
    spec = load_config(config).pipeline(pipeline)
    options = RunOptions(
        pipeline=pipeline,
        lookback=None if lookback is None else parse_duration(lookback),
        future_tolerance=None if future_tolerance is None else parse_duration(future_tolerance),
        format=fmt,
        batch_size=batch_size,
        lock_timeout=lock_timeout,
        force=force,
        read_ahead=read_ahead,
        max_rejects=None if max_rejects is None else _reject_limit(max_rejects),
        delimiter=None if delimiter is None else parse_delimiter(delimiter),
    )
    # Options that apply only as a file is read: a file skipped as already loaded is told apart.
    unread_options = [
        f"{option} {shlex.quote(value)}"
        for option, value in (("--format", fmt), ("--delimiter", delimiter))
        if value is not None
    ]
    if metrics_file is not None and (len(inputs) > 1 or names_many(inputs[0])):
        # Refused before anything is read or written, whatever number of files it holds today.
        raise ConfigError(
            "--metrics-file describes one run, and a folder, a glob or a repeated --input loads "
            "one run per file; give a single --input file, or run each file with its own "
            "metrics file"
        )
    if (
        metrics_file is not None
        and output is not None
        and not is_stdout(output)
        and os.path.realpath(metrics_file) == os.path.realpath(output)
    ):
        # Both would be written, one over the other.
        raise ConfigError(f"--metrics-file and --output both name {output}; give each its own file")
    metrics = _Metrics(metrics_file, pipeline, db, inputs[0] if len(inputs) == 1 else None)
    with metrics:  # a failure before any run began is written as one
        files = feed_files(inputs, db)
    if output is not None:
        for path in files:
            check_writable(output, db, path)
    show_progress = not (quiet or as_json) and sys.stderr.isatty()
    if files != [inputs[0]] or len(inputs) > 1:
        if replay:
            raise ConfigError("--replay loads one dead-letter export; give a single --input file")
        _run_feed(
            files,
            db,
            options,
            spec,
            output=output,
            as_json=as_json,
            quiet=quiet,
            keep_going=keep_going,
            show_progress=show_progress,
            unread_options=unread_options,
        )
        return
    input_path = files[0]
    bar = _LoadBar(input_path, show=show_progress)

    def committed(summary: RunSummary, store: Store) -> None:
        bar.stop()
        metrics.write(summary)
        if output is not None:
            _write_output(output, summary, store)
        if not quiet and not is_stdout(output):
            _show_run(summary, store, as_json=as_json, report=report)
        if not quiet and (note := _skipped_note([summary], unread_options)):
            typer.echo(f"capstone: {visible(note)}", err=True)

    def failed(summary: RunSummary, store: Store) -> None:
        # For scripts: a run that failed or was interrupted is still described on stdout
        # (--json) and in --output, as its run-log row says; the error line goes to stderr.
        bar.stop()
        metrics.write(summary)
        try:
            if output is not None:
                _write_output(output, summary, store)
            if as_json and not quiet and not is_stdout(output):  # `-o -` has printed it
                print_json(summary.model_dump())
        except BrokenPipeError:  # the reader left; the run's error still decides the exit code
            stdout_to_nowhere()

    try:
        with metrics:
            capstone.pipeline.run(
                input_path,
                db,
                options,
                bar.update if show_progress else None,
                replay=replay,
                spec=spec,
                on_commit=committed,
                on_failure=failed
                if output is not None or metrics_file is not None or (as_json and not quiet)
                else None,
            )
    finally:
        bar.stop()


class _Metrics:
    """--metrics-file: written once per command, for the run that ended or, when the command
    failed before a run began, as a failure without one."""

    def __init__(self, path: Path | None, pipeline: str, db: str, input_path: str | None) -> None:
        if path is not None:
            check_writable(path, db, input_path, "--metrics-file")
        self._path, self._pipeline, self._written = path, pipeline, False

    def write(self, summary: RunSummary | None) -> None:
        if self._path is None or self._written:
            return
        self._written = True
        write_metrics(self._path, self._pipeline, summary)

    def __enter__(self) -> "_Metrics":
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None:
            self.write(None)


def _reject_limit(value: str) -> RejectLimit:
    try:
        return RejectLimit.parse(value)
    except ValueError as error:
        raise ConfigError(f"--{error}".replace("max_rejects", "max-rejects", 1)) from None


def _run_feed(
    files: list[str],
    db: str,
    options: RunOptions,
    spec: PipelineSpec,
    *,
    output: Path | None,
    as_json: bool,
    quiet: bool,
    keep_going: bool,
    show_progress: bool,
    unread_options: list[str],
) -> None:
    """Many files: one run each, then one table (or JSON document) for them all."""
    bars: list[_LoadBar] = []

    def progress(path: str, place: int, count: int) -> capstone.pipeline.Progress | None:
        for bar in bars:
            bar.stop()
        bars[:] = [_LoadBar(path, show=show_progress, label=f"{place}/{count} {path}")]
        return bars[0].update if show_progress else None

    try:
        feed = capstone.pipeline.run_many(
            files, db, options, progress, spec=spec, keep_going=keep_going
        )
    finally:
        for bar in bars:
            bar.stop()
    document = {
        "runs": [r.model_dump() for r in feed.runs],
        "skipped_files": [r.source for r in feed.runs if r.same_content_as is not None],
    }
    if output is not None:
        text = orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"
        if is_stdout(output):
            sys.stdout.write(text)
        else:
            output.write_text(text)
    if not quiet and not is_stdout(output):
        if as_json:
            print_json(document)
        else:
            console.print(feed_table(feed.runs, console.width))
    if not quiet and (note := _skipped_note(feed.runs, unread_options)):
        typer.echo(f"capstone: {visible(note)}", err=True)
    if feed.failed:
        raise CapstoneError(_feed_failure(feed))


_NAMED_FAILURES = 10
"""Failed files the last line names one by one; `capstone runs --failed` lists them all."""


def _feed_failure(feed: capstone.pipeline.FeedRuns) -> str:
    """The last line of a feed with failed files: one failure with its error; many (with
    --keep-going) each by run and file, pointing to `capstone runs --failed` for the errors."""
    failed = feed.failed
    counted = f"{plural(len(failed), 'file')} of {len(feed.runs) + len(feed.unread)} failed"
    if len(failed) == 1:
        rest = (
            f"; {len(feed.unread)} later file(s) not loaded (--keep-going loads them)"
            if feed.unread
            else ""
        )
        return f"{counted}; run {failed[0].run_id} ({failed[0].source}): {failed[0].error}{rest}"
    named = ", ".join(f"run {r.run_id} ({r.source})" for r in failed[:_NAMED_FAILURES])
    more = f" and {len(failed) - _NAMED_FAILURES} more" if len(failed) > _NAMED_FAILURES else ""
    return f"{counted}: {named}{more}; `capstone runs --failed` shows why each failed"


def _skipped_note(runs: list[RunSummary], unread_options: list[str]) -> str:
    """The options that apply only as a file is read (--format, --delimiter) and were not
    applied to the files skipped unread as already loaded, or '': the manifest knows content,
    not how it was read, so the skip stands and --force reads them again."""
    skipped = [r for r in runs if r.same_content_as is not None]
    if not skipped or not unread_options:
        return ""
    given = " and ".join(unread_options)
    if len(skipped) == 1:
        run = skipped[0]
        return (
            f"{given} not applied: {run.source} was skipped unread as already loaded (run "
            f"{run.same_content_as} loaded the same content); --force reads it again with {given}"
        )
    return (
        f"{given} not applied to {plural(len(skipped), 'file')} skipped unread as already loaded "
        f"(earlier runs loaded the same content); --force reads them again with {given}"
    )


class _LoadBar:
    """The progress bar on stderr, if `show`: it appears as the run starts and goes when it ends."""

    def __init__(self, input_path: str, *, show: bool, label: str = "loading") -> None:
        self._path = input_path
        self._bar = Progress(
            TextColumn("{task.description}", markup=False, style="bold"),
            BarColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
            disable=not show,
        )
        self._label = label
        self._task: TaskID | None = None
        self._started = utcnow()

    def update(self, records: int, bytes_read: int) -> None:
        """The pipeline's progress callback; its first call comes as the run starts."""
        if self._task is None:
            self._bar.start()
            self._task = self._bar.add_task(self._label, total=SourceFile(self._path).size, rate="")
            self._started = utcnow()
            return
        seconds = max((utcnow() - self._started).total_seconds(), 1e-6)
        self._bar.update(
            self._task,
            completed=bytes_read,
            rate=f"{records:,} records · {records / seconds:,.0f}/s",
        )

    def stop(self) -> None:
        self._bar.stop()


def _write_output(path: Path, summary: RunSummary, store: Store) -> None:
    document = summary.model_dump() | {"run_log": [r.model_dump() for r in store.runs()]}
    text = orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"
    if is_stdout(path):
        sys.stdout.write(text.decode())
        return
    try:
        path.write_bytes(text)
    except OSError as error:
        raise CapstoneError(
            f"run {summary.run_id} ended ({summary.status}) but --output {path} could not be "
            f"written ({error.strerror}); choose a writable path"
        ) from None


def _show_run(summary: RunSummary, store: Store, *, as_json: bool, report: bool) -> None:
    steps = store.step_counts(summary.run_id) if report else []
    if as_json:
        data = summary.model_dump()
        if report:
            data["by_step"] = all_steps(steps)
        print_json(data)
        return
    console.print(summary_table(summary))
    if report:
        console.print(steps_table(steps, f"lineage of run {summary.run_id} by step"))


@handle_errors
def replay(
    reason: Annotated[
        str | None,
        typer.Option(
            "--reason",
            "-r",
            help="Only dead letters whose reason contains this (value, value.float_parsing).",
            metavar="CODE",
        ),
    ] = None,
    ids: Annotated[
        list[int] | None,
        typer.Option(
            "--id", callback=fits_64_bits, help="Only this dead letter (repeatable).", metavar="ID"
        ),
    ] = None,
    first_run: Annotated[
        int | None,
        typer.Option(
            "--run",
            callback=fits_64_bits,
            help="Only dead letters first seen in this run.",
            metavar="ID",
        ),
    ] = None,
    pipeline: Pipeline = "events",
    config: ConfigPath = None,
    db: Db = "capstone.db",
    lock_timeout: LockTimeout = 5.0,
    as_json: Json = False,
    quiet: Quiet = False,
    metrics_file: MetricsFile = None,
) -> None:
    """Re-validate stored dead letters under today's rules; accepted ones load and are resolved.

    A replay is a run like any other: atomic, logged, with lineage. It ignores the watermark
    (dead letters are late by definition) but keeps the timestamp guard.

    Example: capstone replay --reason value.float_parsing
    """
    check_output_mode(as_json, quiet)
    spec = load_config(config).pipeline(pipeline)
    options = RunOptions(pipeline=pipeline, lock_timeout=lock_timeout)
    metrics = _Metrics(metrics_file, pipeline, db, None)

    def committed(summary: RunSummary, store: Store) -> None:
        metrics.write(summary)
        if not quiet:
            _show_run(summary, store, as_json=as_json, report=False)

    with metrics:
        summary = capstone.pipeline.replay(
            db,
            options,
            reason=reason,
            ids=ids,
            first_run=first_run,
            spec=spec,
            on_commit=committed,
            on_failure=lambda ended, _store: metrics.write(ended),
        )
    note = _unmatched_replay(summary.input_records, pipeline, reason, ids, first_run)
    if note and not quiet:
        typer.echo(f"capstone: {note}", err=True)


def _unmatched_replay(
    found: int,
    pipeline: str,
    reason: str | None,
    ids: list[int] | None,
    first_run: int | None = None,
) -> str:
    """What a replay's filters asked for that no open dead letter matched, or ''."""
    listing = f"`capstone dead-letters --pipeline {pipeline}` lists them"
    wanted = len(set(ids or []))
    if wanted and found < wanted:
        missing = wanted - found
        return (
            f"{missing} of the {plural(wanted, 'dead letter')} asked for with --id "
            f"{'is' if missing == 1 else 'are'} not open in pipeline {pipeline} (resolved, "
            f"another pipeline's, or unknown); {listing}"
        )
    if found == 0 and reason is not None:
        return (
            f"no open dead letters of pipeline {pipeline} have a reason containing {reason!r}; "
            + listing
        )
    if found == 0 and first_run is not None:
        return f"no open dead letters of pipeline {pipeline} were first seen in run {first_run}; {listing}"
    return ""
