"""The command line: it parses options, calls the library, and turns CapstoneErrors into exit codes.

One module per group of commands, each command a function that `handle_errors` wraps
(capstone.cli._errors); this module assembles them into the `capstone` app, in the order
`capstone --help` lists them. Only this package imports Typer and Rich.
"""

import inspect
from typing import Annotated, Any

import typer

from capstone import __version__
from capstone.cli import admin, dead_letters, reports, retention, run, watch

__all__ = ["app"]

app = typer.Typer(
    name="capstone",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"capstone {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Show the version and exit.",
            metavar="",
        ),
    ] = False,
) -> None:
    """Load event files into SQL: nothing lost, nothing stale wins, every rerun safe.

    Exit codes: 0 success, 1 failure (one line on stderr), 2 usage error, 130 interrupted.
    """


# The commands, in the order `capstone --help` lists them.
app.command()(run.run)
app.command()(watch.watch)
app.command()(reports.report)
app.command()(reports.runs)
app.command()(reports.files)
app.command()(run.replay)
app.command()(reports.lineage)
app.command("reset-watermark")(admin.reset_watermark)
app.command()(retention.prune)
app.command()(admin.init)
app.command()(admin.pipelines)
app.add_typer(dead_letters.app, name="dead-letters")


def _reflow_help(*apps: typer.Typer) -> None:
    """Join each docstring paragraph into one line, so help wraps to the terminal, not to 100."""
    for typer_app in apps:
        infos: list[Any] = [*typer_app.registered_commands, typer_app.registered_callback]
        for info in infos:
            if info is not None and info.help is None and info.callback.__doc__:
                paragraphs = inspect.cleandoc(info.callback.__doc__).split("\n\n")
                info.help = "\n\n".join(" ".join(p.split()) for p in paragraphs)


_reflow_help(app, dead_letters.app)
