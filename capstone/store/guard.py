"""The guard in SQL: which staged record wins over what its key holds, and what is held already.

Both merges (SQLite's ordered upsert, PostgreSQL's plan of winners) and the coverage check behind
the watermark ask these questions; they are written once here, for both backends.
"""

from collections.abc import Callable

from capstone.spec import PipelineSpec
from capstone.store.sql import Dialect
from capstone.store.tables import quote

__all__ = ["gone", "guard", "holds", "ties_before"]


def guard(spec: PipelineSpec) -> str:
    """The comparison by which a record's event time beats the newest one before it: strictly
    newer, or, where ties replace, the same or newer."""
    return ">=" if spec.ties == "replace" else ">"


def holds(
    spec: PipelineSpec,
    dialect: Dialect,
    staged: Callable[[str], str] | None = None,
    earlier_ties: str = "0",
) -> str:
    """SQL true when the target row `t` already holds a staged record: an event time that would
    refuse it, or (where ties replace) the same time with the same values, so that loading it
    again would change nothing. `staged` names a staged column in SQL (default `s."name"`).

    Where ties replace, `earlier_ties` (SQL, see `ties_before`) counts the earlier staged
    records of the key with the record's event time: any of them may replace the stored row
    before the record comes, so the record is then held only by a newer time, never by an equal
    one (both go through the merge, in order, and the last wins, as one by one)."""
    column = staged or (lambda name: f"s.{quote(name)}")
    ts = column(spec.event_time)

    def held_by(table: str, same: str) -> str:
        stored = f"{table}.{quote(spec.event_time)}"
        if spec.ties == "keep":
            return f"{stored} >= {ts}"
        return f"({stored} > {ts} OR ({stored} = {ts} AND {same} AND {earlier_ties} = 0))"

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


def ties_before(keys: str, ts: str, seq: str) -> str:
    """A window counting, for each staged record, the earlier ones (by `seq`) of its key (`keys`,
    SQL) with the same event time (`ts`): what `holds` needs where ties replace."""
    return (
        f"COUNT(*) OVER (PARTITION BY {keys}, {ts} ORDER BY {seq} "
        "ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)"
    )


def gone(spec: PipelineSpec, column: Callable[[str], str] | None = None) -> str:
    """SQL true for a staged tombstone (its delete field true; never one without the field)."""
    if spec.delete_field is None:
        return "FALSE"
    name = column(spec.delete_field) if column else f"s.{quote(spec.delete_field)}"
    return f"COALESCE({name}, FALSE)"
