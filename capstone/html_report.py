"""The run history as one HTML page to look at: per pipeline, records per run by fate, the
watermark, rejects by reason, the slowest runs, the runs that did not succeed and the files loaded.

`collect` reads what the page shows from the run log, the per-run reject counts and the file
manifest (never the lineage table, so its cost follows the number of runs, not of records);
`render_html` turns that into the page, a pure function; `write_html` writes it atomically.
The page is self-contained: inline CSS and SVG drawn here, no script, and a Content-Security-Policy
that forbids the browser to fetch anything, so it can be mailed or archived and opened offline.
Every string from the database (file names, errors, reasons) is escaped: it is user data.
"""

import contextlib
import html
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel

from capstone import __version__
from capstone.atomic import write_atomically
from capstone.errors import CapstoneError, ConfigError
from capstone.manifest import LoadedFile
from capstone.store import Store
from capstone.summary import RunStatus, RunSummary
from capstone.timeutil import earlier, format_ts, parse_duration, parse_ts, utcnow

__all__ = [
    "FATE_COLOURS",
    "PipelineHistory",
    "ReportData",
    "collect",
    "fate_counts",
    "parse_since",
    "render_html",
    "write_html",
]

FATE_COLOURS = {
    "loaded": "#0072b2",
    "late": "#56b4e9",
    "stale": "#e69f00",
    "rejected": "#d55e00",
    "skipped": "#999999",
}
"""The fates a bar stacks, bottom up (Okabe-Ito colours, told apart by colour-blind readers too).
They add up to the run's input: `loaded` here is the records loaded on time, `late` those loaded
behind the watermark."""

UNSUCCESSFUL = (RunStatus.FAILED, RunStatus.INTERRUPTED, RunStatus.ABANDONED)
FAILED_COLOUR = "#cc0000"
MAX_BARS = 500
"""The newest runs the fate chart draws; the tables and totals still cover every run."""
SLOWEST = 10
MAX_REASONS = 15
MAX_LISTED = 100
"""The newest failed runs and files listed; the heading says how many there are in all."""

_CSP = "default-src 'none'; style-src 'unsafe-inline'"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


class PipelineHistory(BaseModel):
    """What the page shows of one pipeline."""

    pipeline: str
    runs: list[RunSummary]
    """Oldest first."""
    reasons: dict[str, int]
    """Rejects per reason code over these runs, most frequent first."""
    files: list[LoadedFile]
    """The manifest rows these runs wrote, newest first."""
    watermark: str | None
    """The pipeline's watermark after its latest successful run shown."""


class ReportData(BaseModel):
    """Everything the page shows."""

    database: str
    """The database as the page names it (a URL with its password hidden)."""
    generated_at: str
    since: str | None = None
    pipeline: str | None = None
    pipelines: list[PipelineHistory]


def collect(
    store: Store,
    database: str,
    pipeline: str | None = None,
    since: datetime | None = None,
    now: datetime | None = None,
) -> ReportData:
    """Read the history the page shows: runs started at or after `since` (all when None), of
    `pipeline` (all when None)."""
    cutoff = None if since is None else format_ts(since)
    # Canonical timestamps compare as text (capstone.timeutil), so the cut needs no SQL of its own.
    runs = [
        r
        for r in reversed(store.runs(pipeline=pipeline))
        if cutoff is None or (r.started_at or "") >= cutoff
    ]
    reasons = store.reject_reasons_by_run(pipeline)
    files = store.files(pipeline)
    histories = []
    for name in sorted({r.pipeline for r in runs}):
        own = [r for r in runs if r.pipeline == name]
        ids = {r.run_id for r in own}
        totals: Counter[str] = Counter()
        for run_id in ids:
            totals.update(reasons.get(run_id, {}))
        marks = [r.watermark for r in own if r.status == RunStatus.SUCCESS and r.watermark]
        histories.append(
            PipelineHistory(
                pipeline=name,
                runs=own,
                reasons=dict(sorted(totals.items(), key=lambda item: (-item[1], item[0]))),
                files=[f for f in files if f.pipeline == name and f.run_id in ids],
                watermark=marks[-1] if marks else None,
            )
        )
    return ReportData(
        database=database,
        generated_at=format_ts((now or utcnow()).replace(microsecond=0)),
        since=cutoff,
        pipeline=pipeline,
        pipelines=histories,
    )


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`--since`: a date or time (ISO 8601, UTC unless it has an offset), or a duration back from
    now (30d, 12h)."""
    try:
        return parse_ts(text.strip())
    except ValueError:
        pass
    try:
        if not text.strip():
            raise ConfigError(text)
        return earlier(now or utcnow(), parse_duration(text))
    except ConfigError:
        raise ConfigError(
            f"cannot read --since {text!r}: give a date (2025-01-31), a time "
            "(2025-01-31T12:00) or a duration back from now (30d, 12h)"
        ) from None


def fate_counts(run: RunSummary) -> dict[str, int]:
    """A run's records by the fates a bar stacks; they add up to its input records."""
    return {
        "loaded": run.loaded - run.late,
        "late": run.late,
        "stale": run.stale,
        "rejected": run.rejected,
        "skipped": run.skipped,
    }


def write_html(path: str | os.PathLike[str], text: str) -> None:
    """Write the page whole or not at all (a temporary file beside it, then a rename); a
    CapstoneError if it cannot be written, and any file already there as it was."""
    target = Path(path)
    try:
        write_atomically(target, text)
    except OSError as error:
        raise _unwritable(target, error) from None


def _unwritable(path: Path, error: OSError) -> CapstoneError:
    return CapstoneError(f"--html {path} could not be written ({error.strerror}); choose another")


# -- the page ------------------------------------------------------------------------------------


def _e(value: object) -> str:
    """Text for HTML or SVG: markup escaped, and control characters and lone surrogates (which
    no browser shows and UTF-8 cannot hold) as visible escapes."""
    text = _CONTROL.sub(
        lambda m: (
            f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}"
        ),
        str(value),
    )
    return html.escape(text, quote=True)


def _n(value: int) -> str:
    return f"{value:,}"


def _when(ts: str | None) -> str:
    """A run's time to the minute, as the tables show it."""
    return "-" if not ts else ts[:16].replace("T", " ")


def _seconds(ms: int) -> str:
    return f"{ms / 1000:,.2f} s" if ms < 60_000 else f"{ms / 60_000:,.1f} min"


def _bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError  # pragma: no cover


def render_html(data: ReportData) -> str:
    """The whole page for `data`, as text."""
    scope = [f"pipeline {data.pipeline}"] if data.pipeline else []
    scope += [f"runs started since {data.since} UTC"] if data.since else []
    nav = "".join(f'<a href="#p-{i}">{_e(h.pipeline)}</a>' for i, h in enumerate(data.pipelines))
    body = (
        "".join(_pipeline_section(i, h) for i, h in enumerate(data.pipelines))
        if data.pipelines
        else '<p class="empty" id="no-runs">No runs logged'
        + (f" ({_e(', '.join(scope))})" if scope else "")
        + ". <code>capstone run</code> loads a file.</p>"
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="capstone {_e(__version__)}">
<title>capstone run history: {_e(data.database)}</title>
<style>{_STYLE}</style>
</head>
<body>
<header>
<h1>capstone run history</h1>
<p class="meta">Database <code>{_e(data.database)}</code> · generated {_e(data.generated_at)} UTC\
{"".join(f" · {_e(s)}" for s in scope)}</p>
{f"<nav>Pipelines: {nav}</nav>" if len(data.pipelines) > 1 else ""}
</header>
{body}
<footer>All times UTC. Counts come from the run log and each run's reject counts; the lineage
table is not read. <code>capstone runs</code>, <code>capstone runs ID</code> and
<code>capstone files</code> show the same figures.</footer>
</body>
</html>
"""


_STYLE = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
  max-width: 1240px; padding: 16px 24px 48px; color: #1a1a1a; background: #fff; }
h1 { font-size: 24px; margin: 8px 0 4px; }
h2 { font-size: 20px; margin: 32px 0 8px; padding-top: 12px; border-top: 2px solid #ddd; }
h3 { font-size: 15px; margin: 20px 0 6px; }
.meta, footer, .note { color: #555; }
footer { margin-top: 40px; font-size: 12px; }
nav a { margin-right: 12px; }
code { font: 12px ui-monospace, "DejaVu Sans Mono", monospace; }
.tiles { display: flex; flex-wrap: wrap; gap: 8px; margin: 8px 0; padding: 0; list-style: none; }
.tiles li { border: 1px solid #ddd; border-radius: 6px; padding: 6px 12px; min-width: 90px; }
.tiles b { display: block; font-size: 18px; }
.tiles .bad { color: #cc0000; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #e5e5e5;
  vertical-align: top; }
th { background: #f5f5f5; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.text { overflow-wrap: anywhere; }
.status-failed, .status-interrupted, .status-abandoned { color: #cc0000; font-weight: 600; }
.legend { margin: 4px 0; padding: 0; list-style: none; display: flex; gap: 16px; }
.legend span { display: inline-block; width: 12px; height: 12px; margin-right: 4px;
  vertical-align: -1px; }
svg { display: block; max-width: 100%; height: auto; }
svg text { font: 11px system-ui, sans-serif; fill: #333; }
.empty { color: #555; font-style: italic; }
"""


def _pipeline_section(index: int, h: PipelineHistory) -> str:
    runs = h.runs
    ok = [r for r in runs if r.status == RunStatus.SUCCESS]
    failed = [r for r in runs if r.status in UNSUCCESSFUL]
    tiles = [
        ("runs", _n(len(runs)), ""),
        ("succeeded", _n(len(ok)), ""),
        ("did not succeed", _n(len(failed)), "bad" if failed else ""),
        ("records read", _n(sum(r.input_records for r in runs)), ""),
        ("loaded", _n(sum(r.loaded for r in runs)), ""),
        ("late", _n(sum(r.late for r in runs)), ""),
        ("rejected", _n(sum(r.rejected for r in runs)), ""),
        ("watermark", h.watermark or "-", ""),
    ]
    tile_html = "".join(
        f'<li class="tile" data-tile="{_e(label)}">{_e(label)}<b class="{cls}">{_e(value)}</b></li>'
        for label, value, cls in tiles
    )
    return f"""
<section class="pipeline" id="p-{index}" data-pipeline="{_e(h.pipeline)}">
<h2>Pipeline {_e(h.pipeline)}</h2>
<ul class="tiles">{tile_html}</ul>
{_fates_chart(runs)}
{_watermark_chart(runs)}
{_reasons_chart(h.reasons)}
{_slowest_table(runs)}
{_failed_table(failed)}
{_files_table(h.files)}
</section>"""


def _section(name: str, title: str, content: str, note: str = "") -> str:
    note_html = f'<p class="note">{note}</p>' if note else ""
    return f'<div class="part" data-part="{name}"><h3>{title}</h3>{note_html}{content}</div>'


# The charts share one frame, so the watermark's points sit under the bars of their runs.
_W, _LEFT, _RIGHT = 1180, 64, 40
_PLOT = _W - _LEFT - _RIGHT


def _slots(count: int) -> tuple[float, float]:
    """The width each run gets on the x axis, and its bar's width."""
    slot = _PLOT / max(count, 1)
    return slot, max(1.0, min(slot * 0.8, 48.0))


def _axis(value: int) -> tuple[int, list[int]]:
    """A round axis maximum at or above `value` and its ticks, all whole numbers: 1, 2, 2.5 or
    5 times a power of ten, in fifths when it divides by five."""
    power = 1
    while power * 10 <= max(value, 1):
        power *= 10
    top = next(
        int(step * power)
        for step in (1, 2, 2.5, 5, 10)
        if step * power >= value and float(step * power).is_integer()
    )
    parts = 5 if top % 5 == 0 else top
    return top, [top * k // parts for k in range(parts + 1)]


def _x_labels(runs: Sequence[RunSummary], slot: float, y: float) -> str:
    """Run ids and start dates under a few evenly spread bars (at most eight, first and last)."""
    if not runs:
        return ""
    picks = sorted(
        {round(i * (len(runs) - 1) / 7) for i in range(8)}
        if len(runs) > 8
        else set(range(len(runs)))
    )
    parts = []
    for i in picks:
        run = runs[i]
        x = _LEFT + slot * (i + 0.5)
        parts.append(
            f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="middle">run {run.run_id}</text>'
            f'<text x="{x:.1f}" y="{y + 13:.1f}" text-anchor="middle">{_e(_when(run.started_at)[5:])}</text>'
        )
    return "".join(parts)


def _fates_chart(all_runs: Sequence[RunSummary]) -> str:
    runs = list(all_runs[-MAX_BARS:])
    if not runs:
        return _section("fates", "Records per run by fate", '<p class="empty">No runs.</p>')
    top, plot_h = 12, 220
    height = top + plot_h + 40
    peak, ticks = _axis(max(r.input_records for r in runs))
    slot, bar = _slots(len(runs))
    base = top + plot_h
    parts = [
        f'<svg class="chart" viewBox="0 0 {_W} {height}" width="{_W}" '
        f'height="{height}" role="img" aria-label="records per run by fate">'
    ]
    for tick in ticks:
        y = base - plot_h * tick / peak
        parts.append(
            f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_n(tick)}</text>'
        )
    for i, run in enumerate(runs):
        x = _LEFT + slot * i + (slot - bar) / 2
        counts = fate_counts(run)
        described = ", ".join(f"{fate} {_n(n)}" for fate, n in counts.items())
        title = f"run {run.run_id} ({run.status}, {_when(run.started_at)}): {_n(run.input_records)} records: {described}"
        if run.error:
            title += f"; error: {run.error}"
        parts.append(f'<g class="run" data-run="{run.run_id}"><title>{_e(title)}</title>')
        y = float(base)
        for fate, count in counts.items():
            if count <= 0:
                continue
            h = plot_h * count / peak
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{max(h, 0.5):.1f}" '
                f'fill="{FATE_COLOURS[fate]}" data-fate="{fate}" data-count="{count}"/>'
            )
        if run.status in UNSUCCESSFUL:
            # A failed run kept no records: a red mark on the axis says it happened.
            cx = x + bar / 2
            parts.append(
                f'<path d="M{cx - 5:.1f} {base + 9} L{cx + 5:.1f} {base + 9} L{cx:.1f} {base + 1} Z" '
                f'fill="{FAILED_COLOUR}" data-status="{_e(run.status)}"/>'
            )
        parts.append("</g>")
    parts.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{base}" y2="{base}" stroke="#333"/>')
    parts.append(_x_labels(runs, slot, base + 22))
    parts.append("</svg>")
    legend = (
        "".join(
            f'<li><span style="background:{colour}"></span>{fate}</li>'
            for fate, colour in FATE_COLOURS.items()
        )
        + f'<li><span style="background:{FAILED_COLOUR}"></span>run did not succeed</li>'
    )
    note = "One bar per run, oldest on the left; each bar is the run's input records by fate. "
    note += "Late records were loaded behind the watermark; stale ones lost to a newer event."
    if len(all_runs) > len(runs):
        note += f" The newest {_n(len(runs))} of {_n(len(all_runs))} runs are drawn."
    return _section(
        "fates",
        "Records per run by fate",
        f'<ul class="legend">{legend}</ul>' + "".join(parts),
        note,
    )


def _watermark_chart(all_runs: Sequence[RunSummary]) -> str:
    runs = list(all_runs[-MAX_BARS:])
    points: list[tuple[int, RunSummary, datetime]] = []
    for i, run in enumerate(runs):
        if run.status == RunStatus.SUCCESS and run.watermark:
            with contextlib.suppress(ValueError):
                points.append((i, run, parse_ts(run.watermark)))
    if not points:
        return _section("watermark", "Watermark", '<p class="empty">No watermark yet.</p>')
    top, plot_h = 12, 160
    height = top + plot_h + 40
    base = top + plot_h
    low = min(p[2] for p in points)
    high = max(p[2] for p in points)
    span = (high - low).total_seconds() or 1.0
    slot, _ = _slots(len(runs))

    def y_of(moment: datetime) -> float:
        if high == low:
            return top + plot_h / 2
        # A margin below the lowest point keeps its label clear of the axis.
        return base - 16 - (plot_h - 16) * (moment - low).total_seconds() / span

    parts = [
        f'<svg class="chart" viewBox="0 0 {_W} {height}" width="{_W}" '
        f'height="{height}" role="img" aria-label="watermark after each run">'
    ]
    labels: list[str] = []
    for moment in sorted({low, high}):
        y = y_of(moment)
        parts.append(
            f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>'
        )
        # Drawn after the line, on a white halo, so the line never hides them.
        labels.append(
            f'<text x="{_LEFT + 4}" y="{y - 4:.1f}" stroke="#fff" stroke-width="3" '
            f'paint-order="stroke">{_e(format_ts(moment))}</text>'
        )
    # A step line: the watermark holds from one run to the next successful one.
    path: list[str] = []
    for n, (i, _, moment) in enumerate(points):
        x, y = _LEFT + slot * (i + 0.5), y_of(moment)
        path.append(f"H{x:.1f} V{y:.1f}" if n else f"M{x:.1f} {y:.1f}")
    last_x = _LEFT + slot * (len(runs) - 0.5)
    path.append(f"H{last_x:.1f}")
    parts.append(f'<path d="{" ".join(path)}" fill="none" stroke="#0072b2" stroke-width="2"/>')
    radius = min(3.5, slot / 3)
    for i, run, moment in points:
        x, y = _LEFT + slot * (i + 0.5), y_of(moment)
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius:.1f}" fill="#0072b2" data-run="{run.run_id}" '
            f'data-watermark="{_e(run.watermark)}"><title>{_e(f"run {run.run_id}: watermark {run.watermark}")}</title></circle>'
        )
    parts.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{base}" y2="{base}" stroke="#333"/>')
    parts += labels
    parts.append(_x_labels(runs, slot, base + 22))
    parts.append("</svg>")
    note = (
        "The latest event time loaded, after each successful run (the runs as in the chart above)."
    )
    return _section("watermark", "Watermark", "".join(parts), note)


def _reasons_chart(reasons: dict[str, int]) -> str:
    if not reasons:
        return _section("reasons", "Rejects by reason", '<p class="empty">No rejects.</p>')
    shown = list(reasons.items())[:MAX_REASONS]
    rest = list(reasons.items())[MAX_REASONS:]
    if rest:
        shown.append((f"{len(rest)} other reasons", sum(n for _, n in rest)))
    label_w, row_h = 300, 22
    height = row_h * len(shown) + 8
    widest = max(n for _, n in shown)
    room = _W - label_w - 90
    parts = [
        f'<svg class="chart" viewBox="0 0 {_W} {height}" width="{_W}" '
        f'height="{height}" role="img" aria-label="rejects by reason">'
    ]
    for i, (reason, count) in enumerate(shown):
        y = 4 + i * row_h
        label = reason if len(reason) <= 44 else reason[:43] + "…"
        width = max(1.0, room * count / widest)
        parts.append(
            f'<g class="reason" data-reason="{_e(reason)}" data-count="{count}">'
            f"<title>{_e(f'{reason}: {count:,} records')}</title>"
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end">{_e(label)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{width:.1f}" height="{row_h - 6}" '
            f'fill="{FATE_COLOURS["rejected"]}"/>'
            f'<text x="{label_w + width + 6:.1f}" y="{y + 15}">{_n(count)}</text></g>'
        )
    parts.append("</svg>")
    note = f"{_n(sum(reasons.values()))} rejected records; a record with several problems counts under each of its reasons."
    return _section("reasons", "Rejects by reason", "".join(parts), note)


def _table(
    name: str, headers: Iterable[tuple[str, str]], rows: Iterable[Sequence[tuple[str, str]]]
) -> str:
    """A table whose header cells are (class, label) and body cells (class, escaped html)."""
    head = "".join(f'<th class="{cls}">{label}</th>' for cls, label in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="{cls}">{cell}</td>' for cls, cell in row) + "</tr>"
        for row in rows
    )
    return f'<table class="{name}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _slowest_table(runs: Sequence[RunSummary]) -> str:
    slowest = sorted(runs, key=lambda r: (-r.duration_ms, r.run_id))[:SLOWEST]
    rows = [
        [
            ("num", str(r.run_id)),
            (f"status-{_e(r.status)}", _e(r.status)),
            ("", _e(_when(r.started_at))),
            ("text", _e(r.source or "-")),
            ("num", _e(_seconds(r.duration_ms))),
            ("num", _n(r.input_records)),
            ("num", _n(round(r.input_records * 1000 / r.duration_ms)) if r.duration_ms else "-"),
        ]
        for r in slowest
    ]
    headers = [
        ("num", "run"),
        ("", "status"),
        ("", "started"),
        ("", "source"),
        ("num", "duration"),
        ("num", "records"),
        ("num", "records/s"),
    ]
    return _section(
        "slowest",
        f"Slowest runs (top {min(SLOWEST, len(runs))} of {_n(len(runs))})",
        _table("slowest", headers, rows),
    )


def _failed_table(failed: Sequence[RunSummary]) -> str:
    if not failed:
        return _section(
            "failed", "Runs that did not succeed", '<p class="empty">None: every run committed.</p>'
        )
    listed = list(reversed(failed))[:MAX_LISTED]
    rows = [
        [
            ("num", str(r.run_id)),
            (f"status-{_e(r.status)}", _e(r.status)),
            ("", _e(_when(r.started_at))),
            ("text", _e(r.source or "-")),
            ("text", _e(r.error or "-")),
        ]
        for r in listed
    ]
    headers = [("num", "run"), ("", "status"), ("", "started"), ("", "source"), ("", "error")]
    more = f", the newest {len(listed)} listed" if len(failed) > len(listed) else ""
    note = "Failed, interrupted and abandoned runs, newest first: each was rolled back whole, so only its run-log row remains; fix the cause and run the file again."
    return _section(
        "failed",
        f"Runs that did not succeed ({_n(len(failed))}{more})",
        _table("failed", headers, rows),
        note,
    )


def _files_table(files: Sequence[LoadedFile]) -> str:
    if not files:
        return _section(
            "files", "Files loaded", '<p class="empty">No files in the manifest for these runs.</p>'
        )
    listed = files[:MAX_LISTED]
    rows = [
        [
            ("text", _e(f.path)),
            ("num", _n(f.records)),
            ("num", _e(_bytes(f.size))),
            ("", f'<code title="{_e(f.sha256)}">{_e(f.sha256[:12])}</code>'),
            ("num", str(f.run_id)),
            ("", _e(_when(f.loaded_at))),
        ]
        for f in listed
    ]
    headers = [
        ("", "path"),
        ("num", "records"),
        ("num", "size"),
        ("", "SHA-256"),
        ("num", "run"),
        ("", "loaded"),
    ]
    more = f", the newest {len(listed)} listed" if len(files) > len(listed) else ""
    note = "The file manifest, newest first: a file whose content is listed is skipped unread when it comes again."
    return _section(
        "files", f"Files loaded ({_n(len(files))}{more})", _table("files", headers, rows), note
    )
