"""Retention: how long per-record lineage is kept (`capstone prune`, a pipeline's `keep_lineage`).

Lineage is the largest thing capstone writes (two rows per staged record, one per reject or
skip). Pruning removes the lineage of runs that finished before a cutoff, and the dead letters
those runs resolved or dismissed; it keeps every run-log row, marked pruned, with the counts,
steps (`run_steps`) and reject reasons (`run_reasons`) that `runs` and `report` read, and the
file manifest, so no file loads again because its run was pruned.
"""

from collections.abc import Sequence
from datetime import datetime, timedelta

from capstone.errors import ConfigError
from capstone.store import Store
from capstone.summary import Pruned
from capstone.timeutil import earlier, format_ts, parse_duration, parse_ts, utcnow

__all__ = ["cutoff", "keep_lineage", "prune", "pruned_note"]


def cutoff(text: str, now: datetime | None = None) -> str:
    """The cutoff `--before` names: an ISO-8601 date or time (UTC unless it says otherwise), or
    a duration back from `now` (`90d`, `12h`); ConfigError when it is neither."""
    now = (now or utcnow()).replace(microsecond=0)
    try:
        return format_ts(parse_ts(text.strip()))
    except ValueError:
        pass
    try:
        span = parse_duration(text)
    except ConfigError:
        raise ConfigError(
            f"--before {text!r} is neither a date nor a duration; give a time such as "
            "2025-03-01 or 2025-03-01T12:00:00, or a span back from now such as 90d or 12h"
        ) from None
    return format_ts(earlier(now, span))


def prune(
    store: Store,
    before: str,
    pipelines: Sequence[str] | None = None,
    *,
    dry_run: bool = False,
    vacuum: bool = False,
    lock_timeout: float = 5.0,
) -> list[Pruned]:
    """Prune each of `pipelines` (default: every pipeline the run log names) before the cutoff
    text `before`, each in its own transaction under its own lock (see `SqlStore.prune`)."""
    names = store.logged_pipelines() if pipelines is None else list(pipelines)
    last = len(names) - 1
    return [
        store.prune(
            name,
            before,
            dry_run=dry_run,
            # Once, with the last pipeline's prune: SQLite's VACUUM rewrites the whole file.
            vacuum=vacuum and place == last,
            lock_timeout=lock_timeout,
        )
        for place, name in enumerate(names)
    ]


def keep_lineage(store: Store, pipeline: str, keep: timedelta, lock_timeout: float) -> Pruned:
    """A pipeline's `keep_lineage` after one of its runs: prune what finished before now - keep."""
    return store.prune(pipeline, format_ts(earlier(utcnow(), keep)), lock_timeout=lock_timeout)


def pruned_note(history: tuple[str, int, int] | None) -> str:
    """The line `lineage KEY` adds when some history was pruned, or ''."""
    if history is None:
        return ""
    before, first, last = history
    runs = f"run {first}" if first == last else f"runs {first}-{last}"
    return f"history before {before} was pruned ({runs})"
