"""The command line. It parses options, calls the library, and turns CapstoneErrors into exit codes.

Exit codes: 0 success (rejected records are not failures), 1 a run or command failed,
2 a usage error, 130 interrupted.
"""

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import orjson
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from capstone import __version__
from capstone.errors import CapstoneError, ConfigError
from capstone.pipeline import RunOptions, run_source
from capstone.render import runs_table, steps_table, summary_table
from capstone.sources import Format, SourceFile
from capstone.store import Store, open_store
from capstone.summary import RunSummary
from capstone.timeutil import parse_duration, utcnow
from capstone.watermark import parse_requested

__all__ = ["app"]

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    name="capstone",
    help="Load event files into SQL: nothing lost, nothing stale wins, every rerun safe.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
)
console = Console(highlight=False)

Db = Annotated[
    str,
    typer.Option(
        "--db",
        envvar="CAPSTONE_DB",
        help="SQLite file path or postgresql:// URL.",
        show_default=True,
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
Pipeline = Annotated[
    str, typer.Option("--pipeline", "-p", help="Pipeline name; each has its own watermark.")
]


def _fail(message: str, code: int) -> typer.Exit:
    sys.stderr.write(f"capstone: error: {message}\n")
    return typer.Exit(code)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn every CapstoneError into one line on stderr and its exit code; no tracebacks."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except CapstoneError as error:
            raise _fail(str(error), error.exit_code) from None
        except KeyboardInterrupt:
            raise _fail("interrupted; nothing was changed", 130) from None
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as error:
            if os.environ.get("CAPSTONE_DEBUG"):
                raise
            raise _fail(
                f"unexpected {type(error).__name__}: {error} (a bug: rerun with CAPSTONE_DEBUG=1 "
                "for the traceback and report it)",
                1,
            ) from None

    return wrapper


def _print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _open_existing(db: str) -> Store:
    return open_store(db, create=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"capstone {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
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
            "--input", "-i", help="File to load: JSON array, JSON Lines or CSV; - for stdin."
        ),
    ],
    db: Db = "capstone.db",
    pipeline: Pipeline = "events",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Also write the summary and the run log here as JSON."),
    ] = None,
    lookback: Annotated[
        str,
        typer.Option(help="Let records this far behind the watermark through (90s, 15m, 2h, 3d)."),
    ] = "0",
    input_format: Annotated[
        str | None,
        typer.Option("--format", help="json, jsonl or csv; detected from content when omitted."),
    ] = None,
    future_tolerance: Annotated[
        str, typer.Option(help="Reject events whose ts is later than now plus this.")
    ] = "1d",
    batch_size: Annotated[int, typer.Option(min=1, help="Records per staging batch.")] = 10_000,
    lock_timeout: Annotated[
        float, typer.Option(min=0, help="Seconds to wait for another run of the pipeline.")
    ] = 5.0,
    report: Annotated[
        bool, typer.Option("--report", help="Also print lineage grouped by step.")
    ] = False,
    as_json: Json = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Load a file: validate, dead-letter rejects, stage, merge newest-wins, advance the watermark.

    Example: capstone run --input data/sample_input.txt --output data/output_summary.json
    """
    if input_format is not None and input_format not in ("json", "jsonl", "csv"):
        raise ConfigError(f"--format must be json, jsonl or csv, not {input_format!r}")
    fmt: Format | None = input_format  # type: ignore[assignment]
    options = RunOptions(
        pipeline=pipeline,
        lookback=parse_duration(lookback),
        future_tolerance=parse_duration(future_tolerance),
        format=fmt,
        batch_size=batch_size,
        lock_timeout=lock_timeout,
    )
    show_progress = not (quiet or as_json) and sys.stderr.isatty()
    with SourceFile(input_path, fmt) as source:
        store = open_store(db)
        try:
            summary = _run_with_progress(source, store, options, show_progress)
            if output is not None:
                _write_output(output, summary, store)
            if not quiet:
                _show_run(summary, store, as_json=as_json, report=report)
        finally:
            store.close()


def _run_with_progress(
    source: SourceFile, store: Store, options: RunOptions, show: bool
) -> RunSummary:
    if not show:
        return run_source(source, store, options)
    size = source.size
    with Progress(
        TextColumn("[bold]loading[/]"),
        BarColumn(),
        DownloadColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("load", total=size, rate="")
        started = utcnow()

        def update(records: int, bytes_read: int) -> None:
            seconds = max((utcnow() - started).total_seconds(), 1e-6)
            bar.update(
                task, completed=bytes_read, rate=f"{records:,} records · {records / seconds:,.0f}/s"
            )

        return run_source(source, store, options, update)


def _write_output(path: Path, summary: RunSummary, store: Store) -> None:
    document = summary.model_dump() | {"run_log": [r.model_dump() for r in store.runs()]}
    try:
        path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    except OSError as error:
        raise CapstoneError(
            f"run {summary.run_id} succeeded but --output {path} could not be written "
            f"({error.strerror}); choose a writable path"
        ) from None


def _show_run(summary: RunSummary, store: Store, *, as_json: bool, report: bool) -> None:
    steps = store.step_counts(summary.run_id) if report else []
    if as_json:
        data = summary.model_dump()
        if report:
            data["by_step"] = {s.step: s.count for s in steps}
        _print_json(data)
        return
    console.print(summary_table(summary))
    if report:
        console.print(steps_table(steps, f"lineage of run {summary.run_id} by step"))


@app.command()
@handle_errors
def report(
    by_step: Annotated[
        bool, typer.Option("--by-step", help="Group lineage by step (the default).")
    ] = True,
    run_id: Annotated[int | None, typer.Option("--run", help="Only this run.")] = None,
    db: Db = "capstone.db",
    as_json: Json = False,
) -> None:
    """Lineage entries grouped by step, for all runs or one.

    Example: capstone report --by-step --run 1
    """
    store = _open_existing(db)
    try:
        if run_id is not None and store.get_run(run_id) is None:
            raise CapstoneError(f"there is no run {run_id}; `capstone runs` lists them")
        counts = store.step_counts(run_id)
    finally:
        store.close()
    if as_json:
        by_step_counts = {c.step: c.count for c in counts}
        _print_json({"run_id": run_id, "by_step": {s: by_step_counts.get(s, 0) for s in _steps()}})
        return
    console.print(steps_table(counts, "lineage by step" + (f" (run {run_id})" if run_id else "")))


def _steps() -> tuple[str, ...]:
    from capstone.store import STEPS

    return STEPS


@app.command()
@handle_errors
def runs(
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many runs.")] = 20,
    pipeline: Annotated[
        str | None, typer.Option("--pipeline", "-p", help="Only this pipeline.")
    ] = None,
    db: Db = "capstone.db",
    as_json: Json = False,
) -> None:
    """Run history, newest first: status, counts, watermark before and after, error.

    Example: capstone runs --limit 5 --json
    """
    store = _open_existing(db)
    try:
        history = store.runs(limit=limit, pipeline=pipeline)
    finally:
        store.close()
    if as_json:
        _print_json([r.model_dump() for r in history])
        return
    console.print(runs_table(history))


@app.command("reset-watermark")
@handle_errors
def reset_watermark(
    pipeline: Pipeline = "events",
    to: Annotated[
        str | None,
        typer.Option("--to", help="Set it to this ISO-8601 time instead of clearing it."),
    ] = None,
    db: Db = "capstone.db",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Clear a pipeline's watermark (or set it with --to) so records it skipped load again.

    The timestamp guard still keeps newer stored rows, so a reset never lets stale data win.

    Example: capstone reset-watermark --pipeline events --to 2025-01-15T09:00:00 --yes
    """
    value = None if to is None else parse_requested(to, utcnow(), RunOptions().future_tolerance)
    store = _open_existing(db)
    try:
        current = store.get_watermark(pipeline)
        action = f"set to {value}" if value else "cleared"
        if not yes:
            typer.confirm(
                f"Watermark of pipeline {pipeline!r} is {current!r}; it will be {action}. Continue?",
                abort=True,
            )
        store.set_watermark(pipeline, value)
    finally:
        store.close()
    typer.echo(f"watermark of pipeline {pipeline!r}: {current or '-'} → {value or '-'}")
