"""What the database holds: lineage per step (`report`), the run log (`runs`), a key's history
(`lineage`)."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from capstone.cli._errors import handle_errors
from capstone.cli._options import (
    ConfigPath,
    Db,
    Json,
    OnlyPipeline,
    check_run_exists,
    check_writable,
    existing,
    fits_64_bits,
    is_stdout,
)
from capstone.cli._output import all_steps, console, print_json
from capstone.cli.render import (
    files_table,
    lineage_table,
    reasons_table,
    runs_table,
    steps_table,
    summary_table,
)
from capstone.config import load_config
from capstone.errors import CapstoneError, ConfigError, damaged_error
from capstone.html_report import collect, parse_since, render_html, write_html
from capstone.retention import pruned_note
from capstone.spec import lineage_key_from_parts
from capstone.store.url import redact

__all__ = ["files", "lineage", "report", "runs"]


@handle_errors
def report(
    by_step: Annotated[
        bool, typer.Option("--by-step", help="Group lineage by step (the default).", metavar="")
    ] = True,
    run_id: Annotated[
        int | None,
        typer.Option("--run", callback=fits_64_bits, help="Only this run.", metavar="ID"),
    ] = None,
    pipeline: OnlyPipeline = None,
    html_file: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Write the run history as one self-contained HTML page (charts and tables per "
            "pipeline) to FILE instead (- for stdout).",
            metavar="FILE",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="With --html: only runs started at or after DATE (2025-01-31, "
            "2025-01-31T12:00, or a duration back from now: 30d).",
            metavar="DATE",
        ),
    ] = None,
    db: Db = "capstone.db",
    as_json: Json = False,
) -> None:
    """Lineage entries grouped by step, for all runs or one; or, with --html, a page to look at.

    The page shows, per pipeline, records per run by fate, the watermark, rejects by reason, the
    slowest runs, the runs that did not succeed and the files loaded. It needs no network: open it
    in any browser, mail it, archive it.

    Example: capstone report --by-step --run 1; capstone report --html report.html --since 30d
    """
    if html_file is not None:
        _html_report(html_file, pipeline, since, run_id, db, as_json)
        return
    if since is not None:
        raise ConfigError("--since goes with --html (the step counts cover whole runs: --run ID)")
    with existing(db) as store:
        check_run_exists(store, run_id)
        counts = store.step_counts(run_id, pipeline)
    if as_json:
        print_json({"run_id": run_id, "pipeline": pipeline, "by_step": all_steps(counts)})
        return
    scope = [f"run {run_id}"] if run_id else []
    scope += [f"pipeline {pipeline}"] if pipeline else []
    console.print(
        steps_table(counts, "lineage by step" + (f" ({', '.join(scope)})" if scope else ""))
    )


def _html_report(
    path: Path, pipeline: str | None, since: str | None, run_id: int | None, db: str, as_json: bool
) -> None:
    if as_json or run_id is not None:
        option = "--json" if as_json else "--run"
        raise ConfigError(f"--html writes a page of every run; leave out {option}")
    cutoff = None if since is None else parse_since(since)
    check_writable(path, db, option="--html")
    with existing(db) as store:
        data = collect(store, redact(db), pipeline, cutoff)
    if is_stdout(path):
        sys.stdout.write(render_html(data))
        return
    write_html(path, render_html(data))
    runs = sum(len(h.runs) for h in data.pipelines)
    console.print(
        f"wrote {path}: {len(data.pipelines)} pipeline{'s' * (len(data.pipelines) != 1)}, "
        f"{runs} run{'s' * (runs != 1)}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@handle_errors
def runs(
    run_id: Annotated[
        int | None,
        typer.Argument(callback=fits_64_bits, help="Show this run in detail.", metavar="RUN_ID"),
    ] = None,
    limit: Annotated[
        int,
        typer.Option(
            min=1, callback=fits_64_bits, help="Show at most this many runs.", metavar="N"
        ),
    ] = 20,
    pipeline: OnlyPipeline = None,
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
    damaged: list[str] = []
    with existing(db) as store:
        if run_id is not None:
            detail = store.get_run(run_id)
            if detail is None:
                raise CapstoneError(f"there is no run {run_id}; `capstone runs` lists them")
            steps = store.step_counts(run_id)
            reasons = store.reject_reasons(run_id)
        else:
            history = store.runs(
                limit=limit, pipeline=pipeline, unsuccessful=failed, damaged=damaged
            )
    if run_id is not None:
        assert detail is not None
        if as_json:
            print_json(detail.model_dump() | {"by_step": all_steps(steps), "by_reason": reasons})
            return
        console.print(summary_table(detail))
        console.print(steps_table(steps, f"lineage of run {run_id} by step"))
        console.print(reasons_table(reasons, f"rejects of run {run_id} by reason"))
        return
    if as_json:
        print_json([r.model_dump() for r in history])
    else:
        console.print(runs_table(history, console.width))
    if damaged:
        raise damaged_error(damaged)


@handle_errors
def files(
    pipeline: OnlyPipeline = None,
    limit: Annotated[
        int,
        typer.Option(
            min=1, callback=fits_64_bits, help="Show at most this many files.", metavar="N"
        ),
    ] = 20,
    db: Db = "capstone.db",
    as_json: Json = False,
) -> None:
    """The file manifest, newest first: each loaded file's path, records, SHA-256 and run.

    A file whose content is listed here is skipped unread when it comes again, under any name
    (run --force loads it anyway).

    Example: capstone files --pipeline events --limit 5
    """
    with existing(db) as store:
        loaded = store.files(pipeline, limit)
    if as_json:
        print_json([f.model_dump() for f in loaded])
        return
    console.print(files_table(loaded, console.width))


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
    key = lineage_key_from_parts(key_parts, spec)
    damaged: list[str] = []
    with existing(db) as store:
        entries = store.lineage(key, pipeline, damaged)
        pruned = pruned_note(store.pruned_history(pipeline))
    if not entries and damaged:
        raise damaged_error(damaged)
    if not entries:  # the same exit code with --json: a script tells "no such key" by it
        hint = f"; {pruned}" if pruned else ""
        raise CapstoneError(
            f"no lineage for key {key!r}; check the key (keys are case-sensitive){hint}"
        )
    if as_json:
        print_json([entry.model_dump() for entry in entries])
        if pruned:
            typer.echo(f"capstone: {pruned}", err=True)
    else:
        console.print(lineage_table(entries, key, console.width))
        if pruned:
            console.print(pruned)
    if damaged:
        raise damaged_error(damaged)
