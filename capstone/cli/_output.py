"""Where commands print: the Rich console for tables, plain JSON on stdout."""

import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from rich.console import Console

from capstone.lineage import StepCount, reported_steps

__all__ = [
    "all_steps",
    "console",
    "plural",
    "print_json",
    "stdout_to_nowhere",
    "stream_json",
]


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # Rich exits 1 here; a table cut short by `| head` ends like JSON cut short: quietly, 0.
        stdout_to_nowhere()
        raise SystemExit(0)


console = _Console(highlight=False)


def print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def stream_json(items: Iterable[Any]) -> None:
    """A JSON array written item by item as `items` yields them, laid out as `print_json` would."""
    out = sys.stdout
    out.write("[")
    first = True
    for item in items:
        text = orjson.dumps(item, option=orjson.OPT_INDENT_2).decode().replace("\n", "\n  ")
        out.write(("\n  " if first else ",\n  ") + text)
        first = False
    out.write("]\n" if first else "\n]\n")


def stdout_to_nowhere() -> None:
    """After a broken pipe: so that the flush at exit cannot complain about it too."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def plural(n: int, noun: str) -> str:
    """`1 dead letter`, `2 dead letters`."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def all_steps(counts: Sequence[StepCount]) -> dict[str, int]:
    """Every step, in pipeline order, with 0 for those no record took: a stable shape for JSON
    (`delete` appears once a pipeline with tombstones has deleted something)."""
    found = {c.step: c.count for c in counts}
    return {step: found.get(step, 0) for step in reported_steps(found)}
