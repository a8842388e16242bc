"""`capstone dead-letters`: list rejected records, export them for fixing, dismiss them."""

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from capstone.cli._errors import handle_errors
from capstone.cli._options import (
    MAX_ID,
    ConfigPath,
    Db,
    Json,
    LockTimeout,
    OnlyPipeline,
    Pipeline,
    check_run_exists,
    check_writable,
    existing,
    fits_64_bits,
    is_stdout,
)
from capstone.cli._output import console, plural, stream_json
from capstone.cli.render import dead_letters_table
from capstone.config import load_config
from capstone.dead_letters import export_line
from capstone.errors import CapstoneError, ConfigError, damaged_error
from capstone.pipeline import RunOptions, dismiss_dead_letters, dismiss_matching
from capstone.spec import PipelineSpec

__all__ = ["app"]

app = typer.Typer(no_args_is_help=False)

Reason = Annotated[
    str | None,
    typer.Option("--reason", "-r", help="Only reasons containing this code.", metavar="CODE"),
]


@app.callback(invoke_without_command=True)
@handle_errors
def dead_letters(
    ctx: typer.Context,
    reason: Reason = None,
    run_id: Annotated[
        int | None,
        typer.Option(
            "--run", callback=fits_64_bits, help="Only those first seen in this run.", metavar="ID"
        ),
    ] = None,
    pipeline: OnlyPipeline = None,
    limit: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=MAX_ID,
            help="Show at most this many; 0 for all [default: 50 in the table, all in --json].",
            show_default=False,
            metavar="N",
        ),
    ] = None,
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
    if limit is None:
        limit = 0 if as_json else 50
    damaged: list[str] = []
    with existing(db) as store:
        check_run_exists(store, run_id)
        if as_json:
            # Written as they are read: an export of a million letters holds one at a time.
            found = store.iter_dead_letters(
                pipeline=pipeline,
                reason=reason,
                run_id=run_id,
                limit=limit + 1 if limit else None,
                include_resolved=resolved,
                damaged=damaged,
            )
            cut = False

            def shown() -> Iterator[dict[str, Any]]:
                nonlocal cut
                for place, letter in enumerate(found):
                    if place == limit and limit:
                        cut = True
                        return
                    yield letter.model_dump()

            with contextlib.closing(found):
                stream_json(shown())
            if cut:
                typer.echo(f"capstone: showing the first {limit}; --limit N shows more", err=True)
            if damaged:
                raise damaged_error(damaged)
            return
        letters = store.dead_letters(
            pipeline=pipeline,
            reason=reason,
            run_id=run_id,
            limit=limit + 1 if limit else None,
            include_resolved=resolved,
            damaged=damaged,
        )
    more = bool(limit) and len(letters) > limit
    if more:
        letters = letters[:limit]
        typer.echo(f"capstone: showing the first {limit}; --limit N shows more", err=True)
    console.print(dead_letters_table(letters, console.width))
    if damaged:
        raise damaged_error(damaged)


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


@app.command("export")
@handle_errors
def dead_letters_export(
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="JSON Lines file to write; - for stdout.", metavar="FILE|-"
        ),
    ],
    reason: Reason = None,
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
    check_writable(output, db)
    with existing(db) as store:
        letters = store.dead_letters(pipeline=pipeline, reason=reason)
        # `dead-letters` lists every pipeline's; an export holds one pipeline's, for its replay.
        others = store.dead_letter_counts(reason)
    others.pop(pipeline, None)
    lines = [export_line(letter) for letter in letters]
    written = [line for line in lines if line is not None]
    try:
        if is_stdout(output):
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
    note = f"; left out {plural(left_out, 'CSV row')} with no JSON form (fix those in the CSV)"
    typer.echo(
        f"wrote {plural(len(written), 'dead letter')} to "
        f"{'stdout' if is_stdout(output) else output}{note if left_out else ''}",
        err=True,
    )
    if others:
        listed = ", ".join(f"{name} ({count})" for name, count in sorted(others.items()))
        typer.echo(
            f"other pipelines have dead letters too: {listed}; export them with --pipeline NAME",
            err=True,
        )


@app.command("dismiss")
@handle_errors
def dead_letters_dismiss(
    ids: Annotated[
        list[int] | None,
        typer.Option(
            "--id",
            callback=fits_64_bits,
            help="The dead letter to dismiss (repeatable).",
            metavar="ID",
        ),
    ] = None,
    run_id: Annotated[
        int | None,
        typer.Option(
            "--run",
            callback=fits_64_bits,
            help="All open ones first seen in this run.",
            metavar="ID",
        ),
    ] = None,
    reason: Reason = None,
    every: Annotated[
        bool, typer.Option("--all", help="All open dead letters of the pipeline.", metavar="")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.", metavar="")
    ] = False,
    pipeline: Pipeline = "events",
    config: ConfigPath = None,
    db: Db = "capstone.db",
    lock_timeout: LockTimeout = 5.0,
) -> None:
    """Mark open dead letters resolved without loading anything, as a logged run.

    For letters fixed where they came from (a CSV row with the wrong number of cells, corrected
    and loaded again) or not worth keeping. `dead-letters --resolved` still lists them. Name
    them by --id (every id must be an open letter of the pipeline, or nothing changes), or in
    bulk by --run and/or --reason, or --all; a bulk dismissal asks first unless --yes.

    Example: capstone dead-letters dismiss --id 11 --id 12; capstone dead-letters dismiss --reason value --run 3 --yes
    """
    spec = load_config(config).pipeline(pipeline)
    options = RunOptions(pipeline=pipeline, lock_timeout=lock_timeout)
    if ids and (run_id is not None or reason is not None or every):
        raise ConfigError("--id names letters one by one; leave out --run, --reason and --all")
    if not ids and run_id is None and reason is None and not every:
        raise ConfigError(
            "say which dead letters to dismiss: --id ID, --run ID, --reason CODE, or --all"
        )
    if not ids:
        _dismiss_matching(options, spec, db, reason, run_id, yes=yes)
        return
    with existing(db) as store:
        summary = dismiss_dead_letters(store, options, ids, spec=spec)
    dismissed = len(set(ids))
    typer.echo(
        f"dismissed {plural(dismissed, 'dead letter')} of pipeline {pipeline} (run {summary.run_id})",
        err=True,
    )


def _dismiss_matching(
    options: RunOptions,
    spec: PipelineSpec,
    db: str,
    reason: str | None,
    run_id: int | None,
    *,
    yes: bool,
) -> None:
    """Dismiss the open letters a filter selects, after the user agreed to the count."""
    which = " ".join(
        ([] if reason is None else [f"with a reason containing {reason!r}"])
        + ([] if run_id is None else [f"first seen in run {run_id}"])
    )
    with existing(db) as store:
        check_run_exists(store, run_id)
        found = store.open_letter_count(spec.name, reason, run_id)
        if not found:
            raise CapstoneError(
                f"no open dead letters of pipeline {spec.name} {which or 'at all'}; nothing to "
                f"dismiss (`capstone dead-letters --pipeline {spec.name}` lists the open ones)"
            )
        if not yes:
            typer.confirm(
                f"Dismiss {plural(found, 'open dead letter')} of pipeline {spec.name}"
                f"{' ' + which if which else ''}?",
                abort=True,
                err=True,
            )
        summary, dismissed = dismiss_matching(
            store, options, reason=reason, first_run=run_id, spec=spec
        )
    typer.echo(
        f"dismissed {plural(dismissed, 'dead letter')} of pipeline {spec.name} "
        f"(run {summary.run_id})",
        err=True,
    )
