"""The `capstone` command (and `python -m capstone`), with Ctrl-C during start-up handled too."""

import sys


def main() -> None:
    """Import the CLI and run it; an interrupt while importing is one line and exit 130."""
    try:
        from capstone.cli import app
    except KeyboardInterrupt:
        sys.stderr.write("capstone: error: interrupted while starting; nothing was changed\n")
        raise SystemExit(130) from None
    app(prog_name="capstone")


if __name__ == "__main__":
    main()
