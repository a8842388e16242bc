"""`capstone prune`: remove old per-record lineage, keeping every run's counts."""

from collections.abc import Sequence
from typing import Annotated

import typer

from capstone import retention
from capstone.cli._errors import handle_errors
from capstone.cli._options import Db, Json, LockTimeout, OnlyPipeline, existing
from capstone.cli._output import plural, print_json
from capstone.summary import Pruned

__all__ = ["prune"]

Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.", metavar="")]


@handle_errors
def prune(
    before: Annotated[
        str,
        typer.Option(
            "--before",
            help="Prune runs that finished before this UTC date or time, or this long ago "
            "(2025-03-01, 2025-03-01T12:00:00, 90d, 12h).",
            metavar="DATE|DURATION",
        ),
    ],
    pipeline: OnlyPipeline = None,
    yes: Yes = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Show what would be removed; remove nothing.", metavar=""),
    ] = False,
    vacuum: Annotated[
        bool,
        typer.Option(
            "--vacuum",
            help="Give the space back to the disk (SQLite: VACUUM, rewriting the file; "
            "PostgreSQL: VACUUM of lineage and dead_letters).",
            metavar="",
        ),
    ] = False,
    db: Db = "capstone.db",
    lock_timeout: LockTimeout = 5.0,
    as_json: Json = False,
) -> None:
    """Remove the per-record lineage of runs that finished before a date, and the dead letters they resolved or dismissed.

    Every run-log row stays, marked pruned, with its counts: `runs` and `report --by-step` total
    as before, and `lineage KEY` says which history was pruned. Open dead letters and the file
    manifest stay. Each pipeline is pruned in one transaction under its lock. SQLite keeps the
    freed pages for later runs unless --vacuum; PostgreSQL's DELETE is followed by ANALYZE.

    Example: capstone prune --before 90d --pipeline events --dry-run
    """
    cutoff = retention.cutoff(before)
    pipelines = None if pipeline is None else [pipeline]
    with existing(db) as store:
        if not yes and not dry_run:
            planned = retention.prune(
                store, cutoff, pipelines, dry_run=True, lock_timeout=lock_timeout
            )
            if not any(p.runs for p in planned):
                _nothing(cutoff, pipeline, as_json, planned)
                return
            for line in _lines(planned):
                typer.echo(line, err=True)
            typer.confirm("Remove it?", abort=True, err=True)
        done = retention.prune(
            store, cutoff, pipelines, dry_run=dry_run, vacuum=vacuum, lock_timeout=lock_timeout
        )
    if not any(p.runs for p in done):
        _nothing(cutoff, pipeline, as_json, done)
        return
    if as_json:
        print_json([p.model_dump() | {"bytes_released": p.bytes_released} for p in done])
        return
    for line in _lines(done):
        typer.echo(line)


def _nothing(cutoff: str, pipeline: str | None, as_json: bool, done: Sequence[Pruned]) -> None:
    if as_json:
        print_json([p.model_dump() | {"bytes_released": p.bytes_released} for p in done])
        return
    whose = f"pipeline {pipeline}" if pipeline else "any pipeline"
    typer.echo(
        f"nothing to prune: no run of {whose} that finished before {cutoff} is left unpruned"
    )


def _lines(done: Sequence[Pruned]) -> list[str]:
    """One line per pipeline pruned, then one about the space."""
    lines = []
    for p in done:
        if not p.runs:
            continue
        verb = "would prune" if p.dry_run else "pruned"
        span = (
            f"run {p.first_run}"
            if p.first_run == p.last_run
            else f"runs {p.first_run}-{p.last_run}"
        )
        lines.append(
            f"{verb} pipeline {p.pipeline}: {plural(p.runs, 'run')} ({span}) finished before "
            f"{p.before}: {plural(p.lineage_rows, 'lineage row')}, "
            f"{plural(p.dead_letters, 'resolved dead letter')}"
        )
    first, last = done[0], done[-1]
    if first.dry_run:
        if first.bytes_before is not None:
            size = _size(first.bytes_before)
            lines.append(
                f"the database file takes {size}"
                if first.free_before is not None
                else f"tables lineage and dead_letters take {size} on disk"
            )
        return lines
    if first.bytes_before is None or last.bytes_after is None:
        return lines
    if last.free_after is None:  # PostgreSQL: the tables' files
        reuse = (
            "VACUUM made the deleted rows' space reusable"
            if last.vacuumed
            else "the deleted rows' space is reused once VACUUM or autovacuum has passed"
        )
        lines.append(
            f"tables lineage and dead_letters: {_size(first.bytes_before)} → "
            f"{_size(last.bytes_after)} on disk ({reuse}; VACUUM FULL returns it to the disk)"
        )
        return lines
    free = last.free_after
    note = (
        f"; {_size(free)} of it is free pages later runs reuse (--vacuum returns them to the disk)"
        if free
        else ""
    )
    lines.append(f"database file: {_size(first.bytes_before)} → {_size(last.bytes_after)}{note}")
    return lines


def _size(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 100_000 else f"{n:,} bytes"
