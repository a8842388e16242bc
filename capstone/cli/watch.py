"""`capstone watch` loads the new and changed files of folders and globs as they settle."""

from typing import Annotated

import orjson
import typer

import capstone.watch
from capstone.cli._errors import handle_errors
from capstone.cli._options import ConfigPath, Db, Delimiter, Json, LockTimeout, Pipeline
from capstone.cli.render import file_note, visible
from capstone.config import load_config
from capstone.errors import ConfigError, LockError
from capstone.limits import RejectLimit
from capstone.pipeline import RunOptions
from capstone.spec import parse_delimiter
from capstone.summary import RunSummary
from capstone.timeutil import parse_duration

__all__ = ["watch"]


def _seconds(option: str, text: str) -> float:
    seconds = parse_duration(text).total_seconds()
    if option == "--interval" and seconds <= 0:
        raise ConfigError(f"--interval must be more than 0, not {text!r}")
    return seconds


def line(summary: RunSummary) -> str:
    """One run as one line: `run 7 landing/a.jsonl.gz: success, 1,000 in, 998 loaded, ...`."""
    counts = (
        f"{summary.input_records:,} in, {summary.loaded:,} loaded, {summary.rejected:,} "
        f"rejected, {summary.skipped:,} skipped, {summary.duration_ms:,} ms"
    )
    text = f"run {summary.run_id} {summary.source}: {summary.status}, {counts}"
    if note := file_note(summary):
        text += f" ({note})"
    if summary.error:
        text += f": {summary.error}"
    return visible(text)


@handle_errors
def watch(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Folders and quoted globs to watch ('landing/**/*.gz').",
            metavar="FOLDER_OR_GLOB...",
        ),
    ],
    pipeline: Pipeline = "events",
    config: ConfigPath = None,
    db: Db = "capstone.db",
    interval: Annotated[
        str, typer.Option(help="Time between two looks at the inputs.", metavar="DURATION")
    ] = "10s",
    settle: Annotated[
        str,
        typer.Option(
            help="Take a file once its size and modification time have not changed for this long.",
            metavar="DURATION",
        ),
    ] = "5s",
    max_rejects: Annotated[
        str | None,
        typer.Option(
            "--max-rejects",
            help="Fail a file's run past this many rejects: 100 or 5% (default: the pipeline's).",
            metavar="N|N%",
        ),
    ] = None,
    lock_timeout: LockTimeout = 5.0,
    delimiter: Delimiter = None,
    as_json: Json = False,
) -> None:
    """Keep loading new and changed files as they appear, each as its own run, one line each.

    Files whose content was loaded before are skipped by the file manifest; those already there at
    start are counted in one line (`watching 31 files (30 already loaded)`), without a run. A
    failed file is retried once it changes. Ctrl-C or SIGTERM stops: a file in progress is rolled
    back, everything committed stays, exit 130.

    Example: capstone watch landing/ --interval 10s --settle 5s
    """
    spec = load_config(config).pipeline(pipeline)
    try:
        limit = None if max_rejects is None else RejectLimit.parse(max_rejects)
    except ValueError as error:
        raise ConfigError(f"--{error}".replace("max_rejects", "max-rejects", 1)) from None
    options = RunOptions(
        pipeline=pipeline,
        lock_timeout=lock_timeout,
        max_rejects=limit,
        delimiter=None if delimiter is None else parse_delimiter(delimiter),
    )
    every, quiet_for = _seconds("--interval", interval), _seconds("--settle", settle)

    done: list[RunSummary] = []

    def report(summary: RunSummary) -> None:
        done.append(summary)
        if as_json:
            typer.echo(orjson.dumps(summary.model_dump()).decode())
        else:
            typer.echo(line(summary))

    def started(found: int, known: int) -> None:
        text = f"watching {found:,} file{'' if found == 1 else 's'} ({known:,} already loaded)"
        # With --json, stdout holds run summaries only, one per line.
        typer.echo(text, err=as_json)

    def busy(path: str, error: LockError) -> None:
        typer.echo(f"capstone: {visible(path)}: {visible(str(error))}; trying again", err=True)

    try:
        capstone.watch.watch(
            inputs,
            db,
            options,
            spec=spec,
            interval=every,
            settle=quiet_for,
            on_file=report,
            on_busy=busy,
            on_start=started,
        )
    except KeyboardInterrupt:
        ok = sum(s.status == "success" for s in done)
        typer.echo(
            f"capstone: stopped; {ok} of {len(done)} file runs of this watch committed", err=True
        )
        raise typer.Exit(130) from None
