"""The record contract between validating and storing: what a staged, rejected or skipped record is.

`classify` produces these; the stores consume them. Neither imports the other: this module is the
whole of what they agree on. A staged record stays a plain tuple on the hot path (a NamedTuple
per record costs a class call per record); `StagingLayout` says once, from the pipeline's
definition, where each value sits in it.
"""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import orjson

__all__ = [
    "CELLS_FIELD",
    "DEAD_LETTER_FIELD",
    "RAW_FIELD",
    "RESERVED_COLUMNS",
    "RESERVED_FIELDS",
    "TIES_BEFORE",
    "Batch",
    "Merged",
    "Reason",
    "Rejected",
    "Rejects",
    "Screen",
    "Skipped",
    "StagedRow",
    "StagingLayout",
]

Reason = tuple[str, str]
"""A machine-readable code and a readable message, for example ("value.float_parsing", "...")."""

StagedRow = tuple[Any, ...]
"""A valid record as the staging table takes it, in `StagingLayout.names` order."""

Screen = Callable[[StagedRow], list[Reason]]
"""A backend's last word on a valid record: reasons it cannot store it (PostgreSQL and NUL)."""

DEAD_LETTER_FIELD = "_dead_letter"
"""In a replay, names the dead letter a record came from; it is removed before validation."""
RAW_FIELD = "_raw"
"""In an export, the text of a dead letter that never parsed as a JSON object; a replay parses it
as the record's text."""
CELLS_FIELD = "_cells"
"""In a kept record, lists the json fields whose CSV cell text did not parse as JSON and is kept
as text; a replay parses them again (a fixed export may hold JSON values there instead)."""
RESERVED_FIELDS = frozenset({DEAD_LETTER_FIELD, RAW_FIELD, CELLS_FIELD})
"""Names a dead-letter export writes into its lines, so a replay reads them as its own."""

SEQ, POSITION, ATTRIBUTES, LINEAGE_KEY, RUN_ID, TS_US = (
    "seq",
    "position",
    "attributes",
    "_lineage_key",
    "run_id",
    "_ts_us",
)
TIES_BEFORE = "_ties_before"
"""In the merge's coverage check, how many earlier staged records of a key share a record's event
time (pipelines whose ties replace)."""
RESERVED_COLUMNS = frozenset({SEQ, POSITION, ATTRIBUTES, LINEAGE_KEY, RUN_ID, TS_US, TIES_BEFORE})
"""Columns capstone adds to staging and target tables (or to staging's rows in the merge); no
field may take their names."""


@dataclass(frozen=True, slots=True)
class StagingLayout:
    """Where each value of a staged row sits:
    (seq, position, *columns, attributes[, lineage key], event time in microseconds).

    The lineage key comes only when the pipeline's key is not a single string field (a single
    string key is its own lineage key). The event time as microseconds since 1970 is what lineage
    stores of it (an integer of 7 bytes where the text took 22; see `capstone.lineage`); the
    reader works it out, off the writer's path.
    """

    columns: tuple[str, ...]
    key: tuple[str, ...]
    own_lineage_key: bool
    """True when the row carries a `_lineage_key` value after its attributes."""

    @property
    def names(self) -> tuple[str, ...]:
        """The staging table's columns, in row order."""
        tail = (LINEAGE_KEY,) if self.own_lineage_key else ()
        return (SEQ, POSITION, *self.columns, ATTRIBUTES, *tail, TS_US)

    def index(self, column: str) -> int:
        """The row index of a record column."""
        return 2 + self.columns.index(column)

    @property
    def attributes(self) -> int:
        return 2 + len(self.columns)

    @property
    def lineage_key(self) -> int:
        """The row index of the text that names the record in lineage."""
        return 3 + len(self.columns) if self.own_lineage_key else self.index(self.key[0])

    @property
    def lineage_key_column(self) -> str:
        return LINEAGE_KEY if self.own_lineage_key else self.key[0]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record bound for the dead-letter table."""

    position: int
    key: str | None
    raw: str
    reasons: list[Reason]
    record: dict[str, Any] | None = None
    """The parsed object, kept so a replay can re-validate it (CSV rows have no JSON raw text)."""
    replayed: int | None = None
    """The dead letter a replayed record came from (`_dead_letter`): rejected again, it updates
    that letter instead of becoming a new one (its edited text has another fingerprint)."""
    behind: str | None = None
    """The record's event time when it is at or below the watermark: skipped, not rejected,
    when its dead letter exists already (an earlier run rejected it)."""
    ts: datetime | None = None
    """An invalid record's event time, where it has one that parses (`classify.mark_behind`)."""

    @property
    def codes(self) -> str:
        return ",".join(code for code, _ in self.reasons)

    @property
    def message(self) -> str:
        return "; ".join(message for _, message in self.reasons)

    @property
    def record_json(self) -> str | None:
        """The parsed record as JSON text, or None when there is none or it nests too deep."""
        if self.record is None:
            return None
        try:
            return orjson.dumps(self.record).decode()
        except orjson.JSONEncodeError:
            return None  # the raw text still holds it whole

    @property
    def fingerprint(self) -> str:
        """Same raw text, same dead letter: seeing bad input again does not duplicate it."""
        return hashlib.sha256(self.raw.encode("utf-8", "surrogatepass")).hexdigest()


class Skipped(NamedTuple):
    """A record an earlier run had: the target holds it or a newer version, or its dead letter."""

    position: int
    key: str | None
    ts: str


@dataclass(frozen=True, slots=True)
class Merged:
    """What a merge did with the staged records."""

    loaded: int
    stale: int
    skipped: int
    """Staged records behind the watermark that the target already held (this version or a
    newer one): they were never staged, and their lineage says `skip`."""
    late: int
    """Loaded records behind the watermark: delivered after a newer event time was loaded."""
    deleted: int = 0
    """Loaded records that were tombstones (their delete field true): they removed their key."""


@dataclass(frozen=True, slots=True)
class Rejects:
    """What writing a batch's rejected records did."""

    new_letters: int
    rejected: "list[Rejected]"
    """The records rejected; the others were behind the watermark and their dead letter existed
    (an earlier run rejected them), so they were skipped."""
    updated_letters: int = 0
    """Dead letters of earlier runs these records brought back, each counted once per run."""


@dataclass(slots=True)
class Batch:
    """The fates of one batch of records."""

    staged: list[StagedRow] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    newest: datetime | None = None
    resolved: list[int] = field(default_factory=list)
    """Dead-letter ids (from `_dead_letter` fields) of replayed records that were staged."""
    behind: int = 0
    """How many staged records are at or below the watermark: they may turn out late, so the
    store counts its late loads only when there are some."""

    def __len__(self) -> int:
        return len(self.staged) + len(self.rejected)
