"""Options several commands share, and the checks on their values."""

import contextlib
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from capstone.config import CONFIG_NAME
from capstone.errors import CapstoneError, ConfigError
from capstone.pipeline import MAX_LOCK_TIMEOUT
from capstone.store import Store, database_files, open_store

__all__ = [
    "MAX_ID",
    "ConfigPath",
    "Db",
    "Json",
    "LockTimeout",
    "OnlyPipeline",
    "Pipeline",
    "Quiet",
    "check_output_mode",
    "check_run_exists",
    "check_writable",
    "existing",
    "fits_64_bits",
    "is_stdout",
]

MAX_ID = 2**63 - 1
"""The largest id or count the databases store (a signed 64-bit integer)."""


def fits_64_bits(value: Any) -> Any:
    """An option callback: ids and counts are positive and fit the databases' 64-bit integers."""
    values = value if isinstance(value, list) else [value]
    if any(v is not None and not 0 < v <= MAX_ID for v in values):
        raise typer.BadParameter(f"ids and counts run from 1 to {MAX_ID:,}")
    return value


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
OnlyPipeline = Annotated[
    str | None, typer.Option("--pipeline", "-p", help="Only this pipeline.", metavar="NAME")
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
Delimiter = Annotated[
    str | None,
    typer.Option(
        "--delimiter",
        help="The CSV delimiter: one character, or tab (default: the pipeline's; a tab for "
        ".tsv files, else a comma).",
        show_default=False,
        metavar="CHAR",
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


def is_stdout(path: Path | None) -> bool:
    return path is not None and str(path) == "-"


def existing(db: str) -> contextlib.closing[Store]:
    """A database that must already exist (report commands never create one), closed after use."""
    return contextlib.closing(open_store(db, create=False))


def check_output_mode(as_json: bool, quiet: bool) -> None:
    """Refuse --json with --quiet: one asks for the summary on stdout, the other for nothing."""
    if as_json and quiet:
        raise ConfigError(
            "--json prints the run's summary and --quiet prints nothing but errors; drop one "
            "(--output FILE writes the JSON whatever stdout shows)"
        )


def check_run_exists(store: Store, run_id: int | None) -> None:
    if run_id is not None and store.get_run(run_id) is None:
        raise CapstoneError(f"there is no run {run_id}; `capstone runs` lists them")


def check_writable(
    path: Path, db: str, input_path: str | None = None, option: str = "--output"
) -> None:
    """Refuse an --output (or another `option` naming a file) the command could not write, or
    that would overwrite the database or the input, before anything is loaded rather than after
    the COMMIT."""
    if is_stdout(path):
        return
    folder = path.parent
    if path.is_dir():
        raise ConfigError(f"{option} {str(path)!r} is a folder; name a file to write")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ConfigError(
            f"{option} {path} is in {folder}, which is not a writable folder; choose another"
        )
    taken = dict.fromkeys(database_files(db), f"the database {db}")
    if input_path is not None and input_path != "-":
        taken[input_path] = f"the input {input_path}"
    target = os.path.realpath(path)
    for other, what in taken.items():
        if os.path.realpath(other) == target:
            raise ConfigError(f"{option} {path} would overwrite {what}; choose another file")
