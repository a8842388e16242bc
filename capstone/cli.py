"""The command line. It parses options, calls the library, and turns CapstoneErrors into exit codes.

Exit codes: 0 success (rejected records are not failures), 1 a run or command failed,
2 a usage error, 130 interrupted.
"""

import functools
import inspect
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import orjson
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

import capstone.pipeline
from capstone import __version__, lineage_key
from capstone.config import CONFIG_NAME, load_config, starter_config
from capstone.dead_letters import export_line
from capstone.errors import CapstoneError, ConfigError
from capstone.pipeline import MAX_BATCH_SIZE, MAX_LOCK_TIMEOUT, RunOptions, dismiss_dead_letters
from capstone.render import (
    dead_letters_table,
    lineage_table,
    pipelines_table,
    reasons_table,
    runs_table,
    steps_table,
    summary_table,
    visible,
)
from capstone.sources import Format, SourceFile
from capstone.store import STEPS, Store, database_files, open_store
from capstone.summary import RunSummary, StepCount
from capstone.timeutil import parse_duration, utcnow
from capstone.watermark import parse_requested

__all__ = ["app"]

MAX_ID = 2**63 - 1
"""The largest id or count the databases store (a signed 64-bit integer)."""


P = ParamSpec("P")
R = TypeVar("R")


def _fits_64_bits(value: Any) -> Any:
    """An option callback: ids and counts are positive and fit the databases' 64-bit integers."""
    values = value if isinstance(value, list) else [value]
    if any(v is not None and not 0 < v <= MAX_ID for v in values):
        raise typer.BadParameter(f"ids and counts run from 1 to {MAX_ID:,}")
    return value


app = typer.Typer(
    name="capstone",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
)


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # Rich exits 1 here; a table cut short by `| head` ends like JSON cut short: quietly, 0.
        _stdout_to_nowhere()
        raise SystemExit(0)


console = _Console(highlight=False)

Db = Annotated[
    str,
    typer.Option(
        "--db",
        envvar="CAPSTONE_DB",
        help="SQLite file path or postgresql:// URL.",
        show_default=True,
        metavar="PATH|URL",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.", metavar="")]
Pipeline = Annotated[
    str,
    typer.Option(
        "--pipeline",
        "-p",
        help="Pipeline name: events (built in) or one from capstone.toml.",
        metavar="NAME",
    ),
]
LockTimeout = Annotated[
    float,
    typer.Option(
        min=0,
        max=MAX_LOCK_TIMEOUT,
        help="Seconds to wait for another run of the pipeline.",
        metavar="SECONDS",
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.", metavar="")]
ConfigPath = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="CAPSTONE_CONFIG",
        help=f"Pipeline config file (default: ./{CONFIG_NAME} when present).",
        show_default=False,
        metavar="FILE",
    ),
]


def _fail(message: str, code: int) -> typer.Exit:
    # Messages quote paths and values from the input: one line, and no terminal escapes.
    sys.stderr.write(f"capstone: error: {visible(message)}\n")
    return typer.Exit(code)


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM takes the same path as Ctrl-C: roll back, log the run as interrupted, exit 130.
    raise KeyboardInterrupt


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn every CapstoneError into one line on stderr and its exit code; no tracebacks."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            return func(*args, **kwargs)
        except CapstoneError as error:
            raise _fail(str(error), error.exit_code) from None
        except KeyboardInterrupt:
            # Runs report their own interruptions (rolled back, or committed just before);
            # this one came before or after any run's transaction.
            raise _fail("interrupted; `capstone runs` shows the state of every run", 130) from None
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except BrokenPipeError:
            # The reader left (`| head`): what it read is all it wanted, and the command's own work
            # is done.
            _stdout_to_nowhere()
            raise typer.Exit(0) from None
        except Exception as error:
            if os.environ.get("CAPSTONE_DEBUG"):
                raise
            raise _fail(
                f"unexpected {type(error).__name__}: {error} (a bug: rerun with CAPSTONE_DEBUG=1 "
                "for the traceback and report it)",
                1,
            ) from None
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapper


def _print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


@contextmanager
def _existing(db: str) -> Iterator[Store]:
    """A database that must already exist (report commands never create one)."""
    store = open_store(db, create=False)
    try:
        yield store
    finally:
        store.close()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"capstone {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Show the version and exit.",
            metavar="",
        ),
    ] = False,
) -> None:
    """Load event files into SQL: nothing lost, nothing stale wins, every rerun safe.

    Exit codes: 0 success, 1 failure (one line on stderr), 2 usage error, 130 interrupted.
    """


@app.command()
@handle_errors
def run(
    input_path: Annotated[
        str,
        typer.Option(
            "--input",
            "-i",
            help="File to load: JSON array, JSON Lines or CSV; - for stdin.",
            metavar="FILE|-",
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
            help="Let records this far behind the watermark through (90s, 15m, 2h, 3d) "
            "(default: the pipeline's, 0 for events).",
            metavar="DURATION",
        ),
    ] = None,
    input_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="json, jsonl or csv; detected from content when omitted.",
            metavar="json|jsonl|csv",
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
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Load a file: validate, dead-letter rejects, stage, merge newest-wins, advance the watermark.

    Example: capstone run --input data/sample_input.txt --output data/output_summary.json
    """
    if input_format is not None and input_format not in ("json", "jsonl", "csv"):
        raise ConfigError(f"--format must be json, jsonl or csv, not {input_format!r}")
    fmt: Format | None = input_format  # type: ignore[assignment]
    spec = load_config(config).pipeline(pipeline)
    options = RunOptions(
        pipeline=pipeline,
        lookback=None if lookback is None else parse_duration(lookback),
        future_tolerance=None if future_tolerance is None else parse_duration(future_tolerance),
        format=fmt,
        batch_size=batch_size,
        lock_timeout=lock_timeout,
    )
    if output is not None:
        _check_writable(output, db, input_path)
    bar = _LoadBar(input_path) if not (quiet or as_json) and sys.stderr.isatty() else None

    def committed(summary: RunSummary, store: Store) -> None:
        if bar is not None:
            bar.stop()
        if output is not None:
            _write_output(output, summary, store)
        if not quiet and not _is_stdout(output):
            _show_run(summary, store, as_json=as_json, report=report)

    def failed(summary: RunSummary, store: Store) -> None:
        # For scripts: a run that failed or was interrupted is still described on stdout
        # (--json) and in --output, as its run-log row says; the error line goes to stderr.
        if bar is not None:
            bar.stop()
        try:
            if output is not None:
                _write_output(output, summary, store)
            if as_json and not quiet and not _is_stdout(output):  # `-o -` has printed it
                _print_json(summary.model_dump())
        except BrokenPipeError:  # the reader left; the run's error still decides the exit code
            _stdout_to_nowhere()

    try:
        capstone.pipeline.run(
            input_path,
            db,
            options,
            None if bar is None else bar.update,
            replay=replay,
            spec=spec,
            on_commit=committed,
            on_failure=failed if output is not None or (as_json and not quiet) else None,
        )
    finally:
        if bar is not None:
            bar.stop()


class _LoadBar:
    """The progress bar on stderr: it appears as the run starts and goes once the run ends."""

    def __init__(self, input_path: str) -> None:
        self._path = input_path
        self._bar = Progress(
            TextColumn("[bold]loading[/]"),
            BarColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._task: TaskID | None = None
        self._started = utcnow()

    def update(self, records: int, bytes_read: int) -> None:
        """The pipeline's progress callback; its first call comes as the run starts."""
        if self._task is None:
            self._bar.start()
            self._task = self._bar.add_task("load", total=SourceFile(self._path).size, rate="")
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


def _stdout_to_nowhere() -> None:
    """After a broken pipe: so that the flush at exit cannot complain about it too."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _is_stdout(path: Path | None) -> bool:
    return path is not None and str(path) == "-"


def _check_writable(path: Path, db: str, input_path: str | None = None) -> None:
    """Refuse an --output the command could not write, or that would overwrite the database or
    the input, before anything is loaded rather than after the COMMIT."""
    if _is_stdout(path):
        return
    folder = path.parent
    if path.is_dir():
        raise ConfigError(f"--output {str(path)!r} is a folder; name a file to write")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ConfigError(
            f"--output {path} is in {folder}, which is not a writable folder; choose another"
        )
    taken = dict.fromkeys(database_files(db), f"the database {db}")
    if input_path is not None and input_path != "-":
        taken[input_path] = f"the input {input_path}"
    target = os.path.realpath(path)
    for other, what in taken.items():
        if os.path.realpath(other) == target:
            raise ConfigError(f"--output {path} would overwrite {what}; choose another file")


def _write_output(path: Path, summary: RunSummary, store: Store) -> None:
    document = summary.model_dump() | {"run_log": [r.model_dump() for r in store.runs()]}
    text = orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"
    if _is_stdout(path):
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
            data["by_step"] = _by_step(steps)
        _print_json(data)
        return
    console.print(summary_table(summary))
    if report:
        console.print(steps_table(steps, f"lineage of run {summary.run_id} by step"))


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _check_run_exists(store: Store, run_id: int | None) -> None:
    if run_id is not None and store.get_run(run_id) is None:
        raise CapstoneError(f"there is no run {run_id}; `capstone runs` lists them")


def _by_step(counts: Sequence[StepCount]) -> dict[str, int]:
    """Every step, in pipeline order, with 0 for those no record took: a stable shape for JSON."""
    found = {c.step: c.count for c in counts}
    return {step: found.get(step, 0) for step in STEPS}


@app.command()
@handle_errors
def report(
    by_step: Annotated[
        bool, typer.Option("--by-step", help="Group lineage by step (the default).", metavar="")
    ] = True,
    run_id: Annotated[
        int | None,
        typer.Option("--run", callback=_fits_64_bits, help="Only this run.", metavar="ID"),
    ] = None,
    pipeline: Annotated[
        str | None, typer.Option("--pipeline", "-p", help="Only this pipeline.", metavar="NAME")
    ] = None,
    db: Db = "capstone.db",
    as_json: Json = False,
) -> None:
    """Lineage entries grouped by step, for all runs or one.

    Example: capstone report --by-step --run 1; capstone report --pipeline orders
    """
    with _existing(db) as store:
        _check_run_exists(store, run_id)
        counts = store.step_counts(run_id, pipeline)
    if as_json:
        _print_json({"run_id": run_id, "pipeline": pipeline, "by_step": _by_step(counts)})
        return
    scope = [f"run {run_id}"] if run_id else []
    scope += [f"pipeline {pipeline}"] if pipeline else []
    console.print(
        steps_table(counts, "lineage by step" + (f" ({', '.join(scope)})" if scope else ""))
    )


@app.command()
@handle_errors
def runs(
    run_id: Annotated[
        int | None,
        typer.Argument(callback=_fits_64_bits, help="Show this run in detail.", metavar="RUN_ID"),
    ] = None,
    limit: Annotated[
        int,
        typer.Option(
            min=1, callback=_fits_64_bits, help="Show at most this many runs.", metavar="N"
        ),
    ] = 20,
    pipeline: Annotated[
        str | None, typer.Option("--pipeline", "-p", help="Only this pipeline.", metavar="NAME")
    ] = None,
    failed: Annotated[
        bool,
        typer.Option(
            "--failed",
            help="Only runs that did not succeed (failed, interrupted, abandoned).",
            metavar="",
        ),
    ] = False,
    db: Db = "capstone.db",
    as_json: Json = False,
) -> None:
    """Run history, newest first: status, counts, watermark before and after, error.

    With a RUN_ID: that run in detail, with its lineage per step and rejects per reason.

    Example: capstone runs --limit 5 --json; capstone runs 3; capstone runs --failed
    """
    with _existing(db) as store:
        if run_id is not None:
            detail = store.get_run(run_id)
            if detail is None:
                raise CapstoneError(f"there is no run {run_id}; `capstone runs` lists them")
            steps = store.step_counts(run_id)
            reasons = store.reject_reasons(run_id)
        else:
            history = store.runs(limit=limit, pipeline=pipeline, unsuccessful=failed)
    if run_id is not None:
        assert detail is not None
        if as_json:
            _print_json(detail.model_dump() | {"by_step": _by_step(steps), "by_reason": reasons})
            return
        console.print(summary_table(detail))
        console.print(steps_table(steps, f"lineage of run {run_id} by step"))
        console.print(reasons_table(reasons, f"rejects of run {run_id} by reason"))
        return
    if as_json:
        _print_json([r.model_dump() for r in history])
        return
    console.print(runs_table(history, console.width))


dead_letters_app = typer.Typer(no_args_is_help=False)
app.add_typer(dead_letters_app, name="dead-letters")


@dead_letters_app.callback(invoke_without_command=True)
@handle_errors
def dead_letters(
    ctx: typer.Context,
    reason: Annotated[
        str | None,
        typer.Option("--reason", "-r", help="Only reasons containing this code.", metavar="CODE"),
    ] = None,
    run_id: Annotated[
        int | None,
        typer.Option(
            "--run", callback=_fits_64_bits, help="Only those first seen in this run.", metavar="ID"
        ),
    ] = None,
    pipeline: Annotated[
        str | None, typer.Option("--pipeline", "-p", help="Only this pipeline.", metavar="NAME")
    ] = None,
    limit: Annotated[
        int,
        typer.Option(min=1, callback=_fits_64_bits, help="Show at most this many.", metavar="N"),
    ] = 50,
    resolved: Annotated[
        bool, typer.Option("--resolved", help="Include dead letters a replay resolved.", metavar="")
    ] = False,
    db: Db = "capstone.db",
    as_json: Json = False,
) -> None:
    """List dead letters (rejected records): reason, position, raw payload (whole in --json).

    Subcommand `export` writes them as JSON Lines for fixing and `capstone run --replay`;
    `dismiss` closes letters that need no replay.

    Example: capstone dead-letters --reason value --limit 10
    """
    if ctx.invoked_subcommand is not None:
        _refuse_options_before(ctx)
        return
    with _existing(db) as store:
        _check_run_exists(store, run_id)
        letters = store.dead_letters(
            pipeline=pipeline,
            reason=reason,
            run_id=run_id,
            limit=limit + 1,
            include_resolved=resolved,
        )
    more = len(letters) > limit
    letters = letters[:limit]
    if more:
        typer.echo(f"capstone: showing the first {limit}; --limit N shows more", err=True)
    if as_json:
        _print_json([letter.model_dump() for letter in letters])
        return
    console.print(dead_letters_table(letters, console.width))


def _refuse_options_before(ctx: typer.Context) -> None:
    """`dead-letters --db x export` would otherwise export from the default database."""
    given = [
        param.opts[0]
        for param in ctx.command.params
        if param.name
        # Typed there, that is: a value from CAPSTONE_DB reaches the subcommand as well.
        and (source := ctx.get_parameter_source(param.name)) is not None
        and source.name == "COMMANDLINE"
    ]
    if given:
        sub = ctx.invoked_subcommand
        raise ConfigError(
            f"{', '.join(given)} must come after `{sub}`, or it would be ignored: "
            f"capstone dead-letters {sub} {' '.join(f'{option} ...' for option in given)}"
        )


@dead_letters_app.command("export")
@handle_errors
def dead_letters_export(
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="JSON Lines file to write; - for stdout.", metavar="FILE|-"
        ),
    ],
    reason: Annotated[
        str | None,
        typer.Option("--reason", "-r", help="Only reasons containing this code.", metavar="CODE"),
    ] = None,
    pipeline: Pipeline = "events",
    db: Db = "capstone.db",
) -> None:
    """Write unresolved dead letters one per line, for fixing and `capstone run --replay`.

    Records that parsed as objects are written as JSON with a `_dead_letter` id, so a replay
    of the fixed file resolves them; broken JSON lines are written as {"_dead_letter": ID,
    "_raw": TEXT}: fix the text, or replace the line with the record, keeping its id. CSV rows that never
    became a record (the wrong number of cells) are left out: fix them in the CSV.

    Example: capstone dead-letters export --output fix.jsonl
    """
    _check_writable(output, db)
    with _existing(db) as store:
        letters = store.dead_letters(pipeline=pipeline, reason=reason)
        # `dead-letters` lists every pipeline's; an export holds one pipeline's, for its replay.
        others = store.dead_letter_counts(reason)
    others.pop(pipeline, None)
    lines = [export_line(letter) for letter in letters]
    written = [line for line in lines if line is not None]
    try:
        if _is_stdout(output):
            sys.stdout.buffer.writelines(line + b"\n" for line in written)
            sys.stdout.flush()
        else:
            with output.open("wb") as fh:
                fh.writelines(line + b"\n" for line in written)
    except BrokenPipeError:
        raise  # `-o - | head`: the reader left, which is no failure (handle_errors ends with 0)
    except OSError as error:
        raise CapstoneError(
            f"cannot write {output} ({error.strerror}); choose a writable path"
        ) from None
    left_out = len(lines) - len(written)
    note = f"; left out {_count(left_out, 'CSV row')} with no JSON form (fix those in the CSV)"
    typer.echo(
        f"wrote {_count(len(written), 'dead letter')} to "
        f"{'stdout' if _is_stdout(output) else output}{note if left_out else ''}",
        err=True,
    )
    if others:
        listed = ", ".join(f"{name} ({count})" for name, count in sorted(others.items()))
        typer.echo(
            f"other pipelines have dead letters too: {listed}; export them with --pipeline NAME",
            err=True,
        )


@dead_letters_app.command("dismiss")
@handle_errors
def dead_letters_dismiss(
    ids: Annotated[
        list[int],
        typer.Option(
            "--id",
            callback=_fits_64_bits,
            help="The dead letter to dismiss (repeatable).",
            metavar="ID",
        ),
    ],
    pipeline: Pipeline = "events",
    config: ConfigPath = None,
    db: Db = "capstone.db",
    lock_timeout: LockTimeout = 5.0,
) -> None:
    """Mark open dead letters resolved without loading anything, as a logged run.

    For letters fixed where they came from (a CSV row with the wrong number of cells, corrected
    and loaded again) or not worth keeping. `dead-letters --resolved` still lists them. Every id
    must be an open letter of the pipeline, or nothing changes.

    Example: capstone dead-letters dismiss --id 11 --id 12
    """
    spec = load_config(config).pipeline(pipeline)
    options = RunOptions(pipeline=pipeline, lock_timeout=lock_timeout)
    with _existing(db) as store:
        summary = dismiss_dead_letters(store, options, ids, spec=spec)
    dismissed = len(set(ids))
    typer.echo(
        f"dismissed {_count(dismissed, 'dead letter')} of pipeline {pipeline} (run {summary.run_id})",
        err=True,
    )


@app.command()
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
            "--id", callback=_fits_64_bits, help="Only this dead letter (repeatable).", metavar="ID"
        ),
    ] = None,
    pipeline: Pipeline = "events",
    config: ConfigPath = None,
    db: Db = "capstone.db",
    lock_timeout: LockTimeout = 5.0,
    as_json: Json = False,
    quiet: Quiet = False,
) -> None:
    """Re-validate stored dead letters under today's rules; accepted ones load and are resolved.

    A replay is a run like any other: atomic, logged, with lineage. It ignores the watermark
    (dead letters are late by definition) but keeps the timestamp guard.

    Example: capstone replay --reason value.float_parsing
    """
    spec = load_config(config).pipeline(pipeline)
    options = RunOptions(pipeline=pipeline, lock_timeout=lock_timeout)

    def committed(summary: RunSummary, store: Store) -> None:
        if not quiet:
            _show_run(summary, store, as_json=as_json, report=False)

    summary = capstone.pipeline.replay(
        db, options, reason=reason, ids=ids, spec=spec, on_commit=committed
    )
    note = _unmatched_replay(summary.input_records, pipeline, reason, ids)
    if note and not quiet:
        typer.echo(f"capstone: {note}", err=True)


def _unmatched_replay(found: int, pipeline: str, reason: str | None, ids: list[int] | None) -> str:
    """What a replay's filters asked for that no open dead letter matched, or ''."""
    listing = f"`capstone dead-letters --pipeline {pipeline}` lists them"
    wanted = len(set(ids or []))
    if wanted and found < wanted:
        missing = wanted - found
        return (
            f"{missing} of the {_count(wanted, 'dead letter')} asked for with --id "
            f"{'is' if missing == 1 else 'are'} not open in pipeline {pipeline} (resolved, "
            f"another pipeline's, or unknown); {listing}"
        )
    if found == 0 and reason is not None:
        return (
            f"no open dead letters of pipeline {pipeline} have a reason containing {reason!r}; "
            + listing
        )
    return ""


@app.command()
@handle_errors
def lineage(
    key_parts: Annotated[
        list[str],
        typer.Argument(metavar="KEY", help="The record key to trace; one value per key field."),
    ],
    pipeline: Annotated[
        str | None,
        typer.Option(
            "--pipeline",
            "-p",
            help="Only this pipeline (needed for composite keys).",
            metavar="NAME",
        ),
    ] = None,
    config: ConfigPath = None,
    db: Db = "capstone.db",
    as_json: Json = False,
) -> None:
    """Every step every record with KEY went through, across runs, with source and position.

    Answers "why does the target hold this value?". A composite key is given as its parts in
    the order the pipeline declares them.

    Example: capstone lineage evt-003; capstone lineage --pipeline orders O-1001 1
    """
    spec = None if pipeline is None else load_config(config).pipeline(pipeline)
    key = lineage_key.from_parts(key_parts, spec)
    with _existing(db) as store:
        entries = store.lineage(key, pipeline)
    if not entries:  # the same exit code with --json: a script tells "no such key" by it
        raise CapstoneError(f"no lineage for key {key!r}; check the key (keys are case-sensitive)")
    if as_json:
        _print_json([entry.model_dump() for entry in entries])
        return
    console.print(lineage_table(entries, key, console.width))


@app.command("reset-watermark")
@handle_errors
def reset_watermark(
    pipeline: Pipeline = "events",
    config: ConfigPath = None,
    to: Annotated[
        str | None,
        typer.Option(
            "--to", help="Set it to this ISO-8601 time instead of clearing it.", metavar="TIMESTAMP"
        ),
    ] = None,
    db: Db = "capstone.db",
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.", metavar="")
    ] = False,
    lock_timeout: Annotated[
        float,
        typer.Option(
            min=0,
            max=MAX_LOCK_TIMEOUT,
            help="Seconds to wait for a run of the pipeline to finish.",
            metavar="SECONDS",
        ),
    ] = 5.0,
) -> None:
    """Clear a pipeline's watermark (or set it with --to) so records it skipped load again.

    The timestamp guard still keeps newer stored rows, so a reset never lets stale data win.

    Example: capstone reset-watermark --pipeline events --to 2025-01-15T09:00:00 --yes
    """
    tolerance = load_config(config).pipeline(pipeline).future_tolerance
    value = None if to is None else parse_requested(to, utcnow(), tolerance)
    with _existing(db) as store:
        current = store.get_watermark(pipeline)
        action = f"set to {value}" if value else "cleared"
        if not yes:
            typer.confirm(
                f"Watermark of pipeline {pipeline!r} is {current!r}; it will be {action}. Continue?",
                abort=True,
            )
        # Under the pipeline's lock, and only if no run changed it while the user read it.
        store.reset_watermark(pipeline, value, expected=current, lock_timeout=lock_timeout)
    typer.echo(f"watermark of pipeline {pipeline!r}: {current or '-'} → {value or '-'}")


@app.command()
@handle_errors
def init(
    path: Annotated[
        Path, typer.Option("--path", help="Where to write the config.", metavar="FILE")
    ] = Path(CONFIG_NAME),
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing file.", metavar="")
    ] = False,
) -> None:
    """Write a commented starter capstone.toml with an example `orders` pipeline.

    Example: capstone init && capstone pipelines
    """
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; edit it, or pass --force to overwrite it")
    try:
        path.write_text(starter_config(), encoding="utf-8")
    except OSError as error:
        raise CapstoneError(
            f"cannot write {path} ({error.strerror}); choose a writable path"
        ) from None
    typer.echo(f"wrote {path}; list its pipelines with `capstone pipelines`", err=True)


@app.command()
@handle_errors
def pipelines(
    config: ConfigPath = None,
    db: Db = "capstone.db",
    as_json: Json = False,
) -> None:
    """The pipelines you can run: target table, key, event time, watermark and last run.

    Example: capstone pipelines --json
    """
    rows = capstone.pipeline.status(db, load_config(config).pipelines.values())
    if as_json:
        _print_json([row.model_dump() for row in rows])
        return
    console.print(pipelines_table(rows, console.width))


def _reflow_help(*apps: typer.Typer) -> None:
    """Join each docstring paragraph into one line, so help wraps to the terminal, not to 100."""
    for typer_app in apps:
        infos: list[Any] = [*typer_app.registered_commands, typer_app.registered_callback]
        for info in infos:
            if info is not None and info.help is None and info.callback.__doc__:
                paragraphs = inspect.cleandoc(info.callback.__doc__).split("\n\n")
                info.help = "\n\n".join(" ".join(p.split()) for p in paragraphs)


_reflow_help(app, dead_letters_app)
