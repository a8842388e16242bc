"""The guard in SQL: which staged record wins over what its key holds, and what is held already.

Both merges (SQLite's ordered upsert, PostgreSQL's plan of winners) and the coverage check behind
the watermark ask these questions; they are written once here, for both backends.
"""

from collections.abc import Callable

from capstone.spec import PipelineSpec
from capstone.store.sql import Dialect
from capstone.store.tables import quote

__all__ = ["gone", "guard", "holds"]


def guard(spec: PipelineSpec) -> str:
    """The comparison by which a record's event time beats the newest one before it: strictly
    newer, or, where ties replace, the same or newer."""
    return ">=" if spec.ties == "replace" else ">"


def holds(spec: PipelineSpec, dialect: Dialect, staged: Callable[[str], str] | None = None) -> str:
    """SQL true when the target row `t` already holds a staged record: an event time that would
    refuse it, or (where ties replace) the same time with the same values, so that loading it
    again would change nothing. `staged` names a staged column in SQL (default `s."name"`)."""
    column = staged or (lambda name: f"s.{quote(name)}")
    ts = column(spec.event_time)

    def held_by(table: str, same: str) -> str:
        stored = f"{table}.{quote(spec.event_time)}"
        if spec.ties == "keep":
            return f"{stored} >= {ts}"
        return f"({stored} > {ts} OR ({stored} = {ts} AND {same}))"

    same_values = " AND ".join(
        f"t.{quote(c)} {dialect.same} {column(c)}"
        for c in (*spec.columns, "attributes")
        if c not in spec.key and c != spec.event_time
    )
    in_target = held_by("t", same_values)
    if spec.delete_field is None:
        return in_target
    # A tombstone `d` holds a record as new as it, or (replacing ties) a tombstone of that time.
    in_tombstones = held_by("d", gone(spec, column))
    return f"(COALESCE({in_target}, FALSE) OR COALESCE({in_tombstones}, FALSE))"


def gone(spec: PipelineSpec, column: Callable[[str], str] | None = None) -> str:
    """SQL true for a staged tombstone (its delete field true; never one without the field)."""
    if spec.delete_field is None:
        return "FALSE"
    name = column(spec.delete_field) if column else f"s.{quote(spec.delete_field)}"
    return f"COALESCE({name}, FALSE)"
