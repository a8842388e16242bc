"""Every way a command can fail, turned into one line on stderr and an exit code.

Exit codes: 0 success (rejected records are not failures), 1 a run or command failed,
2 a usage error, 130 interrupted.
"""

import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer

from capstone.cli._output import stdout_to_nowhere
from capstone.cli.render import visible
from capstone.errors import CapstoneError
from capstone.store.url import redact

__all__ = ["handle_errors"]


P = ParamSpec("P")
R = TypeVar("R")


def _fail(message: str, code: int) -> typer.Exit:
    # Messages quote paths and values from the input: one line, and no terminal escapes. The
    # stores hide the passwords they know of; this is the last guard for any --db that slips by.
    sys.stderr.write(f"capstone: error: {visible(redact(message))}\n")
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
        except MemoryError:
            # Runs turn it into a failed run of their own; this one came outside any run.
            raise _fail(
                "the command's data is too large for the memory available; free memory, or "
                "narrow it (--limit, --pipeline, a smaller --batch-size)",
                1,
            ) from None
        except BrokenPipeError:
            # The reader left (`| head`): what it read is all it wanted, and the command's own work
            # is done.
            stdout_to_nowhere()
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
