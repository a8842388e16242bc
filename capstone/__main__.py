"""The `capstone` command (and `python -m capstone`): every way it can end is one line on stderr.

Commands turn their own errors into one line and an exit code (`capstone.cli._errors.handle_errors`).
What happens around them is handled here: Ctrl-C during the imports, and usage errors (an
unknown option, a bad value), which Click would print as a multi-line box.
"""

import signal
import sys


def main() -> None:
    """Run the CLI and exit with its code."""
    try:
        import typer

        from capstone.cli import app
    except KeyboardInterrupt:
        _exit("interrupted while starting; nothing was changed", 130)
    try:
        code = app(prog_name="capstone", standalone_mode=False)
    except typer.TyperException as error:  # Click's usage errors derive from it
        message = error.format_message().rstrip(".")
        if not message:  # `capstone` alone: the help, and exit 2, as Click has always done it
            app(prog_name="capstone")
        context = getattr(error, "ctx", None)
        hint = f"; see `{context.command_path} --help`" if context is not None else ""
        _exit(f"{message}{hint}", error.exit_code)
    except typer.Abort as abort:
        if isinstance(abort.__context__, KeyboardInterrupt):  # Click turns Ctrl-C into Abort
            sys.stderr.write("\n")
            _exit("interrupted; `capstone runs` shows the state of every run", 130)
        _exit("aborted; nothing was changed", 1)  # "no" or end of input at a confirmation prompt
    # The command is done and its exit code decided: a signal now would only blur it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(code if isinstance(code, int) else 0)


def _exit(message: str, code: int) -> None:
    sys.stderr.write(f"capstone: error: {message}\n")
    raise SystemExit(code)


if __name__ == "__main__":
    main()
