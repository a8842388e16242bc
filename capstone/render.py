"""Rich renderings of capstone's results. Only cli.py imports this module."""

from collections.abc import Sequence

from rich.table import Table

from capstone.store import STEPS
from capstone.summary import RunSummary, StepCount

__all__ = ["runs_table", "steps_table", "summary_table"]

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
    table = Table(title=title)
    table.add_column("step")
    table.add_column("records", justify="right")
    for step in STEPS:
        table.add_row(step, f"{by_step.get(step, 0):,}")
    table.add_row("[bold]total[/]", f"[bold]{sum(by_step.values()):,}[/]")
    return table


def runs_table(runs: Sequence[RunSummary]) -> Table:
    """Run history, newest first."""
    table = Table(title="runs")
    for name, justify in (
        ("id", "right"),
        ("pipeline", "left"),
        ("status", "left"),
        ("started (UTC)", "left"),
        ("ms", "right"),
        ("in", "right"),
        ("staged", "right"),
        ("loaded", "right"),
        ("stale", "right"),
        ("rejected", "right"),
        ("skipped", "right"),
        ("watermark before → after", "left"),
        ("error", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for run in runs:
        style = _STATUS_STYLE.get(run.status, "")
        table.add_row(
            str(run.run_id),
            run.pipeline,
            f"[{style}]{run.status}[/]" if style else run.status,
            (run.started_at or "")[:19],
            f"{run.duration_ms:,}",
            f"{run.input_records:,}",
            f"{run.staged:,}",
            f"{run.loaded:,}",
            f"{run.stale:,}",
            f"{run.rejected:,}",
            f"{run.skipped:,}",
            f"{run.watermark_before or '-'} → {run.watermark or '-'}",
            run.error or "",
        )
    return table
