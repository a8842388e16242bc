"""A run's counters and duration in the Prometheus text format, for schedulers and alerting.

node_exporter's textfile collector reads `*.prom` files from one folder; `write_metrics` writes
such a file whole or not at all (a temporary file in the same folder, then a rename), so the
collector never reads half of one. One file per pipeline: each write replaces the file.
"""

import os
import time
from datetime import UTC
from pathlib import Path

from capstone.atomic import write_atomically
from capstone.errors import CapstoneError
from capstone.summary import RunStatus, RunSummary
from capstone.timeutil import parse_ts

__all__ = ["FATES", "render_metrics", "write_metrics"]

FATES = ("staged", "loaded", "late", "deleted", "stale", "rejected", "skipped")
"""The fates `capstone_run_records` counts: input = staged + rejected + skipped, staged = loaded
+ stale; late and deleted are parts of loaded."""


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_metrics(pipeline: str, summary: RunSummary | None, now: float | None = None) -> str:
    """The metrics of `pipeline`'s run that just ended, as Prometheus text.

    `summary` is the run's summary or run-log row (a failed run's counts are 0: nothing was kept),
    or None when the command failed before a run began; `now` (seconds since the epoch) stands
    for the run's end when the summary has none.
    """
    ended = time.time() if now is None else now
    if summary is not None and summary.finished_at is not None:
        ended = parse_ts(summary.finished_at).replace(tzinfo=UTC).timestamp()
    run = summary or RunSummary(run_id=0, pipeline=pipeline, status=RunStatus.FAILED)
    who = f'pipeline="{_label(pipeline)}"'
    lines = [
        "# HELP capstone_run_records Records of the last run by fate.",
        "# TYPE capstone_run_records gauge",
        *(f'capstone_run_records{{fate="{fate}",{who}}} {getattr(run, fate)}' for fate in FATES),
    ]
    for name, help_text, value in (
        ("input_records", "Records the last run read.", run.input_records),
        ("dead_letters", "Dead letters the last run wrote for the first time.", run.dead_letters),
        (
            "dead_letters_updated",
            "Dead letters of earlier runs the last run saw again.",
            run.dead_letters_updated,
        ),
        ("lineage_entries", "Lineage entries (steps) the last run recorded.", run.lineage_entries),
        ("duration_seconds", "How long the last run took.", f"{run.duration_ms / 1000:.3f}"),
        ("success", "1 if the last run committed, else 0.", int(run.status == RunStatus.SUCCESS)),
        (
            "timestamp_seconds",
            "When the last run ended, in seconds since the epoch.",
            f"{ended:.3f}",
        ),
    ):
        lines += [
            f"# HELP capstone_run_{name} {help_text}",
            f"# TYPE capstone_run_{name} gauge",
            f"capstone_run_{name}{{{who}}} {value}",
        ]
    if summary is not None:
        lines += [
            "# HELP capstone_run_id The last run's id in the run log (capstone runs ID).",
            "# TYPE capstone_run_id gauge",
            f"capstone_run_id{{{who}}} {summary.run_id}",
        ]
    return "\n".join(lines) + "\n"


def write_metrics(
    path: str | os.PathLike[str],
    pipeline: str,
    summary: RunSummary | None,
    now: float | None = None,
) -> None:
    """Write `render_metrics(...)` to `path` atomically, readable by other users (the collector);
    CapstoneError if it cannot be written, and the file as it was."""
    target = Path(path)
    text = render_metrics(pipeline, summary, now)
    try:
        write_atomically(target, text)
    except OSError as error:
        raise _unwritable(target, summary, error) from None


def _unwritable(path: Path, summary: RunSummary | None, error: OSError) -> CapstoneError:
    ended = "" if summary is None else f"run {summary.run_id} ended ({summary.status}) but "
    return CapstoneError(
        f"{ended}--metrics-file {path} could not be written ({error.strerror}); choose a "
        "writable folder"
    )
