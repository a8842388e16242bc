"""Rich renderings of capstone's results. Only cli.py imports this module."""

from collections.abc import Sequence
from typing import Any, NamedTuple

from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from capstone.store import STEPS
from capstone.summary import DeadLetter, LineageEntry, RunSummary, StepCount

__all__ = [
    "dead_letters_table",
    "lineage_table",
    "pipelines_table",
    "reasons_table",
    "runs_table",
    "steps_table",
    "summary_table",
]

_STATUS_STYLE = {
    "success": "green",
    "failed": "red",
    "running": "yellow",
    "abandoned": "magenta",
    "interrupted": "magenta",
}


class _Column(NamedTuple):
    header: str
    right: bool = False
    drop: int = 0
    """0: always shown; otherwise hidden on a narrow screen, highest first."""
    flexible: int = 0
    """Width this column can shrink to (clipping with …), if it can; 0 for one that cannot."""
    clip_left: bool = False
    """Clip at the start instead (the end of a path names the file)."""


def _width(column: _Column, cells: list[str]) -> int:
    lines = (line for cell in cells for line in Text.from_markup(cell).plain.split("\n"))
    return max([cell_len(column.header), *(cell_len(line) for line in lines)])


def _fitted(
    title: str, columns: list[_Column], rows: list[list[str]], width: int | None
) -> tuple[Table, list[str]]:
    """A table of the columns that fit in `width` (all when None), and the headers left out.

    Rich would squeeze every column to fit, folding ids and numbers mid-value; leaving out the
    columns that matter least keeps every value shown whole.
    """
    shown = list(range(len(columns)))
    natural = [_width(c, [row[i] for row in rows]) for i, c in enumerate(columns)]
    widths = [
        min(n, c.flexible) if c.flexible else n for n, c in zip(natural, columns, strict=True)
    ]

    def spare() -> int:
        # Each column costs its text, one space either side and a rule; the table one more rule.
        return (width or 0) - 1 - sum(widths[j] + 3 for j in shown)

    by_drop = sorted((i for i, c in enumerate(columns) if c.drop), key=lambda i: -columns[i].drop)
    for i in by_drop:
        if width is None or spare() >= 0:
            break
        shown.remove(i)
    # Flexible columns share what is left, the least needy first, so a short one is shown whole.
    flexible = sorted((i for i in shown if columns[i].flexible), key=lambda i: natural[i])
    left = spare() if width else 1 << 30
    for n, i in enumerate(flexible):
        grow = max(0, min(natural[i] - widths[i], left // (len(flexible) - n)))
        widths[i] += grow
        left -= grow
    rows = [
        [
            "…" + cell[-(widths[i] - 1) :]
            if columns[i].clip_left and cell_len(cell) > widths[i]
            else cell
            for i, cell in enumerate(row)
        ]
        for row in rows
    ]
    table = Table(title=title)
    for i in shown:
        column = columns[i]
        table.add_column(
            column.header,
            justify="right" if column.right else "left",
            no_wrap=True,
            overflow="ellipsis",
            max_width=widths[i] if column.flexible else None,
        )
    for row in rows:
        table.add_row(*(row[i] for i in shown))
    return table, [columns[i].header for i in range(len(columns)) if i not in shown]


def _caption(table: Table, hidden: list[str], notes: list[str]) -> None:
    lines = list(notes)
    if hidden:
        lines.append(
            f"not shown on this narrow screen: {', '.join(hidden)} (--json has every field)"
        )
    if lines:
        table.caption = "\n".join(lines)
        table.caption_justify = "left"


def summary_table(summary: RunSummary) -> Table:
    """One run's summary as a two-column table."""
    table = Table(title=f"run {summary.run_id} · pipeline {summary.pipeline}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    style = _STATUS_STYLE.get(summary.status, "")
    table.add_row("status", f"[{style}]{summary.status}[/]" if style else summary.status)
    table.add_row("source", summary.source or "")
    for field in (
        "input_records",
        "staged",
        "loaded",
        "stale",
        "rejected",
        "skipped",
        "dead_letters",
        "lineage_entries",
    ):
        table.add_row(field, f"{getattr(summary, field):,}")
    table.add_row("watermark", f"{summary.watermark_before or '-'} → {summary.watermark or '-'}")
    table.add_row("duration", f"{summary.duration_ms:,} ms")
    if summary.error:
        table.add_row("error", summary.error)
    return table


def steps_table(counts: Sequence[StepCount], title: str) -> Table:
    """Lineage rows per step, in pipeline order, with every step shown."""
    by_step = {count.step: count.count for count in counts}
    table = Table(title=title, min_width=len(title) + 2)
    table.add_column("step")
    table.add_column("records", justify="right")
    for step in STEPS:
        table.add_row(step, f"{by_step.get(step, 0):,}")
    table.add_row("[bold]total[/]", f"[bold]{sum(by_step.values()):,}[/]")
    return table


def runs_table(runs: Sequence[RunSummary], width: int | None = None) -> Table:
    """Run history, newest first; errors are listed under the table (`runs ID` has everything).

    On a narrow screen `staged` and `stale` go first: both follow from the other counts
    (in = staged + rejected + skipped, staged = loaded + stale)."""
    columns = [
        _Column("id", right=True),
        _Column("pipeline", drop=3),
        _Column("status"),
        _Column("started (UTC)", drop=4),
        _Column("in", right=True),
        _Column("staged", right=True, drop=6),
        _Column("loaded", right=True),
        _Column("stale", right=True, drop=5),
        _Column("rejected", right=True),
        _Column("skipped", right=True),
        _Column("watermark", drop=2),
    ]
    rows = []
    errors = []
    for run in runs:
        style = _STATUS_STYLE.get(run.status, "")
        rows.append(
            [
                str(run.run_id),
                run.pipeline,
                f"[{style}]{run.status}[/]" if style else run.status,
                (run.started_at or "").replace("T", " ")[:16],
                f"{run.input_records:,}",
                f"{run.staged:,}",
                f"{run.loaded:,}",
                f"{run.stale:,}",
                f"{run.rejected:,}",
                f"{run.skipped:,}",
                run.watermark or "-",
            ]
        )
        if run.error:
            errors.append(f"run {run.run_id}: {run.error}")
    table, hidden = _fitted("runs", columns, rows, width)
    _caption(table, hidden, errors)
    return table


def reasons_table(reasons: dict[str, int], title: str) -> Table:
    """Rejected records per reason code."""
    table = Table(title=title, min_width=len(title) + 2)
    table.add_column("reason")
    table.add_column("records", justify="right")
    for reason, count in reasons.items():
        table.add_row(reason, f"{count:,}")
    if not reasons:
        table.add_row("[dim](none)[/]", "0")
    return table


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def dead_letters_table(letters: Sequence[DeadLetter], width: int | None = None) -> Table:
    """Dead letters with reason codes and raw payloads clipped to fit (--json has them whole)."""
    columns = [
        _Column("id", right=True),
        _Column("run", right=True, drop=2),
        _Column("pos", right=True),
        _Column("key", drop=1),
        _Column("reason"),
        _Column("raw", flexible=12),
    ]
    if any(letter.resolved_run_id is not None for letter in letters):
        columns.append(_Column("resolved"))
    rows = [
        [
            str(letter.id),
            str(letter.run_id),
            str(letter.position),
            _clip(letter.key or "", 16),
            letter.reason.replace(",", "\n"),
            _clip(letter.raw.replace("\n", "⏎"), 60),
            "" if letter.resolved_run_id is None else f"run {letter.resolved_run_id}",
        ][: len(columns)]
        for letter in letters
    ]
    table, hidden = _fitted(f"dead letters ({len(letters)} shown)", columns, rows, width)
    _caption(table, hidden, [])
    return table


def lineage_table(entries: Sequence[LineageEntry], key: str, width: int | None = None) -> Table:
    """Every step of every record with one key, across runs."""
    columns = [
        _Column("run", right=True),
        _Column("pipeline", drop=2),
        _Column("source", drop=1, flexible=12, clip_left=True),
        _Column("position", right=True),
        _Column("step"),
        _Column("detail", flexible=20),
    ]
    rows = [
        [
            str(entry.run_id),
            entry.pipeline,
            entry.source or "",
            str(entry.position),
            entry.step,
            entry.detail or "",
        ]
        for entry in entries
    ]
    table, hidden = _fitted(f"lineage of key {key!r}", columns, rows, width)
    _caption(table, hidden, [])
    return table


def pipelines_table(rows: Sequence[dict[str, Any]], width: int | None = None) -> Table:
    """Configured pipelines with their stored state."""
    columns = [
        _Column("pipeline"),
        _Column("target", drop=3),
        _Column("key", drop=1),
        _Column("event time", drop=2),
        _Column("fields", right=True, drop=5),
        _Column("schema", drop=6),
        _Column("watermark"),
        _Column("last run", drop=4),
    ]
    cells = []
    for row in rows:
        last = row["last_run"]
        cells.append(
            [
                row["pipeline"],
                row["target"],
                ", ".join(row["key"]),
                row["event_time"],
                str(len(row["fields"])),
                "-" if row["schema_version"] is None else f"v{row['schema_version']}",
                row["watermark"] or "-",
                "-"
                if last is None
                else f"{last['run_id']} {last['status']} {last['started_at'][:19]}",
            ]
        )
    table, hidden = _fitted("pipelines", columns, cells, width)
    _caption(table, hidden, [])
    return table
