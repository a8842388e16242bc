"""Rich renderings of capstone's results, for the commands of this package.

Stored values (keys, payloads, paths, error messages) reach Rich as `Text`, never as markup: a
key like `[bold]a` or `k[/]` is data, and an escape character in a CSV cell must not reach the
terminal as a control sequence.
"""

import re
from collections.abc import Sequence
from typing import NamedTuple

from rich import box
from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from capstone.lineage import LineageEntry, StepCount, reported_steps
from capstone.manifest import LoadedFile
from capstone.pipeline import PipelineStatus
from capstone.summary import DeadLetter, RunSummary

__all__ = [
    "dead_letters_table",
    "feed_table",
    "file_note",
    "files_table",
    "lineage_table",
    "pipelines_table",
    "reasons_table",
    "runs_table",
    "steps_table",
    "summary_table",
    "visible",
]

_STATUS_STYLE = {
    "success": "green",
    "failed": "red",
    "running": "yellow",
    "abandoned": "magenta",
    "interrupted": "magenta",
}
# Control characters, and the bidirectional overrides that reorder what follows them.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def visible(value: str) -> str:
    """Text with control characters shown as escapes (\\x1b, \\u202e) instead of obeyed."""
    return _CONTROL.sub(
        lambda m: (
            f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}"
        ),
        value,
    )


def _text(value: str, style: str = "") -> Text:
    """A stored value as plain text: never markup, control characters shown, not obeyed."""
    return Text(visible(value), style=style)


def _lines(parts: list[str]) -> Text:
    """Values one per line (reason codes, say), each shown like `_text`."""
    return Text("\n".join(visible(part) for part in parts))


def _status(status: str) -> Text:
    return Text(status, style=_STATUS_STYLE.get(status, ""))


def _clip(text: str, width: int, *, left: bool = False) -> str:
    """At most `width` terminal cells, with … where text was cut (at the start if `left`)."""
    if cell_len(text) <= width:
        return text
    kept = ""
    for char in reversed(text) if left else text:
        if cell_len(kept + char) > width - 1:
            break
        kept = char + kept if left else kept + char
    return "…" + kept if left else kept + "…"


class _Column(NamedTuple):
    header: str
    right: bool = False
    drop: int = 0
    """0: always shown; otherwise left out on a narrow screen, highest first."""
    flexible: int = 0
    """Width this column can shrink to, clipping its text with …; 0 for one that cannot."""
    clip_left: bool = False
    """Clip at the start instead (the end of a path names the file)."""


def _fitted(title: str, columns: list[_Column], rows: list[list[Text]], width: int | None) -> Table:
    """The rows as a table that fits in `width` (any width when None), every value whole.

    Rich would squeeze every column to fit, folding ids and counts mid-value. Instead the
    columns that matter least are left out (and named under the table), flexible columns are
    clipped, and when even the essential columns do not fit, each row becomes a list of
    `column value` lines.
    """
    natural = [
        max(
            [
                cell_len(c.header),
                *(cell_len(line) for row in rows for line in row[i].plain.split("\n")),
            ]
        )
        for i, c in enumerate(columns)
    ]
    widths = [
        min(n, c.flexible) if c.flexible else n for n, c in zip(natural, columns, strict=True)
    ]
    shown = list(range(len(columns)))

    def spare(among: list[int]) -> int:
        # Each column costs its text, one space either side and a rule; the table one more rule.
        return (width or 1 << 30) - 1 - sum(widths[j] + 3 for j in among)

    droppable = sorted((i for i, c in enumerate(columns) if c.drop), key=lambda i: columns[i].drop)
    for i in reversed(droppable):
        if spare(shown) >= 0:
            break
        shown.remove(i)
    for i in droppable:  # most wanted first: one left out may fit again beside narrower ones
        if i not in shown and spare(sorted([*shown, i])) >= 0:
            shown = sorted([*shown, i])
    if spare(shown) < 0:
        return _vertical(title, columns, rows)
    # Flexible columns share what is left, the least needy first, so a short one is shown whole.
    flexible = sorted((i for i in shown if columns[i].flexible), key=lambda i: natural[i])
    left = spare(shown)
    for n, i in enumerate(flexible):
        grow = min(natural[i] - widths[i], left // (len(flexible) - n))
        widths[i] += grow
        left -= grow
    table = Table(title=Text(title))
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
        cells = []
        for i in shown:
            cell = row[i]
            if columns[i].clip_left and cell.cell_len > widths[i]:
                cell = Text(_clip(cell.plain, widths[i], left=True), style=cell.style)
            cells.append(cell)
        table.add_row(*cells)
    hidden = [columns[i].header for i in range(len(columns)) if i not in shown]
    if hidden:
        _note(table, f"not shown on this narrow screen: {', '.join(hidden)} (--json has all)")
    return table


def _vertical(title: str, columns: list[_Column], rows: list[list[Text]]) -> Table:
    table = Table(title=Text(title), show_header=False, box=box.SIMPLE)
    table.add_column("column", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for row in rows:
        for n, (column, cell) in enumerate(zip(columns, row, strict=True)):
            table.add_row(column.header, cell, end_section=n == len(columns) - 1)
    return table


def _note(table: Table, line: str) -> None:
    """A line under the table, after any already there."""
    previous = table.caption if isinstance(table.caption, Text) else Text()
    table.caption = Text("\n").join([previous, _text(line)]) if previous else _text(line)
    table.caption_justify = "left"


def summary_table(summary: RunSummary) -> Table:
    """One run's summary as a two-column table."""
    table = Table(
        title=Text(f"run {summary.run_id} · pipeline {summary.pipeline}"), show_header=False
    )
    # On a narrow screen values fold onto more lines rather than lose their end to "…".
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", justify="right", overflow="fold")
    table.add_row("status", _status(summary.status))
    table.add_row("source", _text(summary.source or ""))
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
        if field == "loaded":
            # Parts of `loaded`, shown when there are any: late deliveries and tombstones.
            for part in ("late", "deleted"):
                if count := getattr(summary, part):
                    table.add_row(f"  {part}", f"{count:,}")
        if field == "dead_letters" and summary.dead_letters_updated:
            # Letters of earlier runs seen again: a replay that rejects them all again would
            # otherwise read `dead_letters 0`, as if nothing had gone wrong.
            table.add_row("dead_letters_updated", f"{summary.dead_letters_updated:,}")
    table.add_row("watermark", f"{summary.watermark_before or '-'} → {summary.watermark or '-'}")
    table.add_row("duration", f"{summary.duration_ms:,} ms")
    if note := file_note(summary):
        table.add_row("file", note)
    if summary.pruned_at:
        table.add_row("lineage", f"pruned {summary.pruned_at} (counts kept)")
    if summary.error:
        table.add_row("error", _text(summary.error))
    return table


def file_note(run: RunSummary) -> str:
    """What the manifest said of a run's file, or ''."""
    if run.same_content_as is not None:
        return f"skipped unread: same content as run {run.same_content_as}"
    if run.changed_since is not None:
        return f"loaded again: changed since run {run.changed_since}"
    return ""


def steps_table(counts: Sequence[StepCount], title: str) -> Table:
    """Lineage rows per step, in pipeline order, with every step shown."""
    by_step = {count.step: count.count for count in counts}
    table = Table(title=Text(title), min_width=len(title) + 2)
    table.add_column("step")
    table.add_column("records", justify="right")
    for step in reported_steps(by_step):
        table.add_row(step, f"{by_step.get(step, 0):,}")
    table.add_row(Text("total", style="bold"), Text(f"{sum(by_step.values()):,}", style="bold"))
    return table


def runs_table(runs: Sequence[RunSummary], width: int | None = None) -> Table:
    """Run history, newest first; errors are listed under the table (`runs ID` has everything).

    On a narrow screen `staged` and `stale` go first: both follow from the other counts
    (in = staged + rejected + skipped, staged = loaded + stale)."""
    columns = [
        _Column("id", right=True),
        _Column("pipeline", drop=3, flexible=16),
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
    rows = [
        [
            Text(str(run.run_id)),
            _text(run.pipeline),
            _status(run.status),
            Text((run.started_at or "").replace("T", " ")[:16]),
            *(
                Text(f"{count:,}")
                for count in (
                    run.input_records,
                    run.staged,
                    run.loaded,
                    run.stale,
                    run.rejected,
                    run.skipped,
                )
            ),
            Text(run.watermark or "-"),
        ]
        for run in runs
    ]
    return _with_run_notes(_fitted("runs", columns, rows, width), runs)


def _with_run_notes(table: Table, runs: Sequence[RunSummary]) -> Table:
    """Each run's error, or what the manifest said of its file, as a line under the table."""
    for run in runs:
        if note := run.error or file_note(run):
            _note(table, f"run {run.run_id}: {note}")
    return table


def feed_table(runs: Sequence[RunSummary], width: int | None = None) -> Table:
    """One row per file's run, in input order, and a total row; errors under the table."""
    columns = [
        _Column("file", flexible=16, clip_left=True),
        _Column("run", right=True),
        _Column("status"),
        _Column("in", right=True),
        _Column("loaded", right=True),
        _Column("stale", right=True, drop=2),
        _Column("rejected", right=True),
        _Column("skipped", right=True),
        _Column("ms", right=True, drop=1),
    ]
    counts = ("input_records", "loaded", "stale", "rejected", "skipped", "duration_ms")

    def row(file: Text, run: str, status: Text, values: Sequence[int]) -> list[Text]:
        return [file, Text(run), status, *(Text(f"{v:,}") for v in values)]

    rows = [
        row(
            _text(r.source or ""), str(r.run_id), _status(r.status), [getattr(r, c) for c in counts]
        )
        for r in runs
    ]
    ok = sum(r.status == "success" for r in runs)
    rows.append(
        row(
            Text("total", style="bold"),
            "",
            Text(f"{ok}/{len(runs)} ok"),
            [sum(getattr(r, c) for r in runs) for c in counts],
        )
    )
    return _with_run_notes(_fitted("runs of this invocation", columns, rows, width), runs)


def files_table(files: Sequence[LoadedFile], width: int | None = None) -> Table:
    """The file manifest, newest first."""
    columns = [
        _Column("run", right=True),
        _Column("pipeline", drop=3, flexible=12),
        _Column("path", flexible=16, clip_left=True),
        _Column("records", right=True),
        _Column("bytes", right=True, drop=2),
        _Column("sha256", drop=1),
        _Column("loaded (UTC)", drop=4),
    ]
    rows = [
        [
            Text(str(f.run_id)),
            _text(f.pipeline),
            _text(f.path),
            Text(f"{f.records:,}"),
            Text(f"{f.size:,}"),
            Text(f.sha256[:12]),
            Text(f.loaded_at.replace("T", " ")[:19]),
        ]
        for f in files
    ]
    return _fitted("loaded files", columns, rows, width)


def reasons_table(reasons: dict[str, int], title: str) -> Table:
    """Rejected records per reason code."""
    table = Table(title=Text(title), min_width=len(title) + 2)
    table.add_column("reason")
    table.add_column("records", justify="right")
    for reason, count in reasons.items():
        table.add_row(_text(reason), f"{count:,}")
    if not reasons:
        table.add_row(Text("(none)", style="dim"), "0")
    return table


def dead_letters_table(letters: Sequence[DeadLetter], width: int | None = None) -> Table:
    """Dead letters with reason codes and raw payloads clipped to fit (--json has them whole)."""
    resolved = any(letter.resolved_run_id is not None for letter in letters)
    pipelines = len({letter.pipeline for letter in letters}) > 1
    columns = [
        _Column("id", right=True),
        *([_Column("pipeline", drop=3, flexible=12)] if pipelines else []),
        _Column("run", right=True, drop=2),
        _Column("pos", right=True),
        _Column("key", drop=1, flexible=16),
        _Column("reason"),
        _Column("raw", flexible=12),
        *([_Column("resolved")] if resolved else []),
    ]
    rows = []
    for letter in letters:
        row = [
            Text(str(letter.id)),
            *([_text(letter.pipeline)] if pipelines else []),
            Text(str(letter.run_id)),
            Text(str(letter.position)),
            _text(letter.key or ""),
            _lines(letter.reason.split(",")),
            _text(letter.raw.replace("\n", "⏎")),
        ]
        if resolved:
            run = letter.resolved_run_id
            row.append(Text("" if run is None else f"run {run}"))
        rows.append(row)
    return _fitted(f"dead letters ({len(letters)} shown)", columns, rows, width)


def lineage_table(entries: Sequence[LineageEntry], key: str, width: int | None = None) -> Table:
    """Every step of every record with one key, across runs."""
    columns = [
        _Column("run", right=True),
        _Column("pipeline", drop=2, flexible=12),
        _Column("source", drop=1, flexible=12, clip_left=True),
        _Column("position", right=True),
        _Column("step"),
        _Column("detail"),
    ]
    rows = [
        [
            Text(str(entry.run_id)),
            _text(entry.pipeline),
            _text(entry.source or ""),
            Text(str(entry.position)),
            Text(entry.step),
            _lines(_detail_lines(entry.detail or "")),
        ]
        for entry in entries
    ]
    return _fitted(f"lineage of key {key!r}", columns, rows, width)


def _detail_lines(detail: str) -> list[str]:
    # A reject's codes one per line, as in `dead-letters`; a stale record's two times likewise.
    return detail.replace(" over ", ",over ").split(",")


def pipelines_table(rows: Sequence[PipelineStatus], width: int | None = None) -> Table:
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
        last = row.last_run
        cells.append(
            [
                _text(row.pipeline),
                _text(row.target),
                _text(", ".join(row.key)),
                _text(row.event_time),
                Text(str(len(row.fields))),
                Text("-" if row.schema_version is None else f"v{row.schema_version}"),
                Text(row.watermark or "-"),
                Text(
                    "-"
                    if last is None
                    else f"{last.run_id} {last.status} {(last.started_at or '')[:19]}"
                ),
            ]
        )
    return _fitted("pipelines", columns, cells, width)
