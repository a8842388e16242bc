"""Rich renderings of capstone's results. Only cli.py imports this module."""

from collections.abc import Sequence
from typing import Any

from rich.table import Table

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


def runs_table(runs: Sequence[RunSummary]) -> Table:
    """Run history, newest first; errors are listed under the table (`runs ID` has everything)."""
    table = Table(title="runs")
    table.add_column("id", justify="right")
    table.add_column("pipeline", no_wrap=True, max_width=16)
    table.add_column("status", no_wrap=True)
    table.add_column("started (UTC)", no_wrap=True)
    for name in ("in", "staged", "loaded", "stale", "rejected", "skipped"):
        table.add_column(name, justify="right", min_width=len(name))
    table.add_column("watermark", no_wrap=True)
    errors = []
    for run in runs:
        style = _STATUS_STYLE.get(run.status, "")
        table.add_row(
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
        )
        if run.error:
            errors.append(f"run {run.run_id}: {run.error}")
    if errors:
        table.caption = "\n".join(errors)
        table.caption_justify = "left"
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


def dead_letters_table(letters: Sequence[DeadLetter]) -> Table:
    """Dead letters with reason codes and raw payloads clipped to fit (--json has them whole)."""
    table = Table(title=f"dead letters ({len(letters)} shown)")
    # Numbers keep their width; key, reason and raw give way (clipped with …) on narrow screens.
    table.add_column("id", justify="right", no_wrap=True, min_width=2)
    table.add_column("run", justify="right", no_wrap=True, min_width=3)
    table.add_column("pos", justify="right", no_wrap=True, min_width=3)
    table.add_column("key", overflow="fold")
    table.add_column("reason", overflow="fold")
    table.add_column("raw", overflow="ellipsis")
    table.add_column("resolved", no_wrap=True, min_width=6)
    for letter in letters:
        table.add_row(
            str(letter.id),
            str(letter.run_id),
            str(letter.position),
            _clip(letter.key or "", 16),
            letter.reason.replace(",", "\n"),
            _clip(letter.raw.replace("\n", "⏎"), 36),
            "" if letter.resolved_run_id is None else f"run {letter.resolved_run_id}",
        )
    return table


def lineage_table(entries: Sequence[LineageEntry], key: str) -> Table:
    """Every step of every record with one key, across runs."""
    table = Table(title=f"lineage of key {key!r}")
    table.add_column("run", justify="right")
    table.add_column("pipeline", no_wrap=True, max_width=12)
    table.add_column("source", no_wrap=True, max_width=32)
    table.add_column("position", justify="right")
    table.add_column("step")
    table.add_column("detail")
    for entry in entries:
        table.add_row(
            str(entry.run_id),
            entry.pipeline,
            entry.source or "",
            str(entry.position),
            entry.step,
            entry.detail or "",
        )
    return table


def pipelines_table(rows: Sequence[dict[str, Any]]) -> Table:
    """Configured pipelines with their stored state."""
    table = Table(title="pipelines")
    for column in ("pipeline", "target", "key", "event time", "fields", "schema", "watermark"):
        table.add_column(column)
    table.add_column("last run")
    for row in rows:
        last = row["last_run"]
        table.add_row(
            row["pipeline"],
            row["target"],
            ", ".join(row["key"]),
            row["event_time"],
            str(len(row["fields"])),
            "-" if row["schema_version"] is None else f"v{row['schema_version']}",
            row["watermark"] or "-",
            "-" if last is None else f"{last['run_id']} {last['status']} {last['started_at'][:19]}",
        )
    return table
