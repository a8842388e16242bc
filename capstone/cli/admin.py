"""Setting up and looking after pipelines: `init`, `pipelines`, `reset-watermark`."""

from pathlib import Path
from typing import Annotated

import typer

import capstone.pipeline
from capstone.cli._errors import handle_errors
from capstone.cli._options import ConfigPath, Db, Delimiter, Json, Pipeline, existing
from capstone.cli._output import console, print_json
from capstone.cli.render import pipelines_table
from capstone.config import CONFIG_NAME, config_from_text, load_config, starter_config
from capstone.draft import DEFAULT_SAMPLE, draft_pipeline
from capstone.errors import CapstoneError, ConfigError
from capstone.pipeline import MAX_LOCK_TIMEOUT
from capstone.spec import parse_delimiter
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
    sample_file: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Draft a pipeline from this sample file (any format, compressed or not) and "
            "append it to the config.",
            metavar="FILE",
        ),
    ] = None,
    pipeline: Annotated[
        str | None,
        typer.Option(
            "--pipeline",
            "-p",
            help="The drafted pipeline's name (default: from the file name).",
            metavar="NAME",
        ),
    ] = None,
    key: Annotated[
        list[str] | None,
        typer.Option(
            "--key",
            help="The key field (repeat for a composite key); proposed when omitted.",
            metavar="FIELD",
        ),
    ] = None,
    event_time: Annotated[
        str | None,
        typer.Option(
            "--event-time", help="The event time field; proposed when omitted.", metavar="FIELD"
        ),
    ] = None,
    sample: Annotated[
        int,
        typer.Option(min=1, max=10_000_000, help="Records of the file to read.", metavar="N"),
    ] = DEFAULT_SAMPLE,
    delimiter: Delimiter = None,
) -> None:
    """Write a commented starter capstone.toml, or with --from draft a pipeline from a sample.

    With --from the first records of the file are read, each field's type is inferred (string,
    integer, float, boolean, timestamp including epochs and common layouts, json), and the key
    and event time are proposed when not given; the pipeline is appended to the config (never
    replacing one of the same name) and what was chosen, and why, is printed.

    Example: capstone init && capstone pipelines

    Example: capstone init --from landing/events-2025-01-01.jsonl.gz --pipeline events_feed
    """
    if sample_file is not None:
        _draft(path, sample_file, pipeline, key or [], event_time, sample, delimiter)
        return
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; edit it, or pass --force to overwrite it")
    try:
        path.write_text(starter_config(), encoding="utf-8")
    except OSError as error:
        raise CapstoneError(
            f"cannot write {path} ({error.strerror}); choose a writable path"
        ) from None
    typer.echo(f"wrote {path}; list its pipelines with `capstone pipelines`", err=True)


def _draft(
    path: Path,
    sample_file: str,
    name: str | None,
    key: list[str],
    event_time: str | None,
    sample: int,
    delimiter: str | None,
) -> None:
    """Append a pipeline drafted from `sample_file` to the config at `path`."""
    existing = load_config(path) if path.exists() else None
    draft = draft_pipeline(
        sample_file,
        name=name,
        key=key,
        event_time=event_time,
        sample=sample,
        delimiter=None if delimiter is None else parse_delimiter(delimiter),
    )
    spec = draft.spec
    if existing is not None and spec.name in existing.pipelines:
        raise ConfigError(
            f"{path} already has a pipeline {spec.name!r}; name the draft with --pipeline NAME"
        )
    try:
        before = path.read_text(encoding="utf-8") if path.exists() else ""
        # The file as it will be is read first: a draft never leaves a config that fails.
        config_from_text(path, before + draft.toml(sample_file))
        with path.open("a", encoding="utf-8") as fh:
            fh.write(draft.toml(sample_file))
    except OSError as error:
        raise CapstoneError(
            f"cannot write {path} ({error.strerror}); choose a writable --path"
        ) from None
    typer.echo(f"drafted pipeline {spec.name!r} from {draft.records:,} records of {sample_file}:")
    typer.echo(f"  key        {', '.join(spec.key)}: {draft.key_why}")
    typer.echo(f"  event_time {spec.event_time}: {draft.event_time_why}")
    width = max(len(choice.name) for choice in draft.fields)
    for choice in draft.fields:
        settings = " ".join(f"{k}={v}" for k, v in choice.settings.items())
        typer.echo(f"  {choice.name:<{width}}  {settings}  ({choice.why})")
    for note in draft.notes:
        typer.echo(f"  note: {note}")
    if spec.delimiter is not None:
        typer.echo(
            f"  delimiter {spec.delimiter!r}" + (", decimal ','" if spec.decimal == "," else "")
        )
    typer.echo(
        f"appended it to {path}; check it, then: capstone run --pipeline {spec.name} "
        f"--input {sample_file}"
    )


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
