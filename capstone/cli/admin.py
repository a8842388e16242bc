"""Setting up and looking after pipelines: `init`, `pipelines`, `reset-watermark`."""

from pathlib import Path
from typing import Annotated

import typer

import capstone.pipeline
from capstone.cli._errors import handle_errors
from capstone.cli._options import ConfigPath, Db, Json, Pipeline, existing
from capstone.cli._output import console, print_json
from capstone.cli.render import pipelines_table
from capstone.config import CONFIG_NAME, load_config, starter_config
from capstone.errors import CapstoneError, ConfigError
from capstone.pipeline import MAX_LOCK_TIMEOUT
from capstone.timeutil import utcnow
from capstone.watermark import parse_requested

__all__ = ["init", "pipelines", "reset_watermark"]


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
    with existing(db) as store:
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
        print_json([row.model_dump() for row in rows])
        return
    console.print(pipelines_table(rows, console.width))
