"""One family of errors. Each message names the problem and the fix; the CLI maps them to exit codes."""

from collections.abc import Sequence

__all__ = [
    "CapstoneError",
    "ConfigError",
    "InputError",
    "InterruptedRun",
    "LockError",
    "MissingDatabase",
    "StoreError",
    "WatermarkError",
    "damaged_error",
]


class CapstoneError(Exception):
    """Base of every error capstone raises on purpose; its message is one line meant for a person."""

    exit_code = 1
    run_id: int | None = None
    """The run the error ended, when one was logged (its run-log row says how it ended)."""


class InputError(CapstoneError):
    """The input file is missing, unreadable or not in a format capstone can read."""


class WatermarkError(CapstoneError):
    """A stored watermark is unusable (does not parse, or lies in the future)."""


class StoreError(CapstoneError):
    """The database cannot be opened, read or written."""


class MissingDatabase(StoreError):
    """A command that only reads found no capstone database there (no file, or no tables)."""


class LockError(StoreError):
    """Another run of the same pipeline holds the pipeline's lock."""


class ConfigError(CapstoneError):
    """An option or a setting has a value capstone cannot use."""

    exit_code = 2


class InterruptedRun(CapstoneError):
    """The run was stopped by Ctrl-C (SIGINT) or SIGTERM; the message says whether it had
    committed (its results kept) or was rolled back."""

    exit_code = 130


def damaged_error(damaged: Sequence[str]) -> StoreError:
    """One line for the stored rows a report could not read (after showing the others): the
    first one's message, and how many more there were."""
    more = f" ({len(damaged) - 1} more row(s) cannot be read either)" if len(damaged) > 1 else ""
    return StoreError(damaged[0] + more)
