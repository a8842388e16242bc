"""Tombstones: a record whose delete field is true removes its key, under the same guard."""

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from capstone import RunOptions, run
from capstone.spec import PipelineSpec
from tests.conftest import fetch

AGAIN = RunOptions(force=True)
"""Loads a file again even when its content was (the tests are about records, not files)."""

Record = tuple[str, str, int, bool]

KEYS = st.sampled_from(["a", "b", "c"])
TIMES = st.integers(0, 4).map(lambda h: f"2025-01-01T0{h}:00:00")
RECORD = st.tuples(KEYS, TIMES, st.integers(0, 2), st.booleans())
BATCHES = st.lists(st.lists(RECORD, max_size=8), min_size=1, max_size=4)


def accounts(ties: str = "keep") -> PipelineSpec:
    """Balances by account id; `closed = true` closes (deletes) an account."""
    return PipelineSpec.model_validate(
        {
            "name": "accounts",
            "key": "id",
            "event_time": "at",
            "ties": ties,
            "delete_field": "closed",
            "fields": {
                "id": {"type": "string"},
                "at": {"type": "timestamp"},
                "balance": {"type": "integer", "required": False},
                "closed": {"type": "boolean", "required": False},
            },
        }
    )


def write(path: Path, records: list[Record]) -> str:
    path.write_bytes(
        b"".join(
            orjson.dumps({"id": k, "at": t, "balance": v, "closed": c}) + b"\n"
            for k, t, v, c in records
        )
    )
    return str(path)


def alive(db: str) -> dict[str, tuple[str, int]]:
    rows = fetch(db, "SELECT id, at, balance FROM accounts")
    return {key: (str(at).replace(" ", "T"), int(balance)) for key, at, balance in rows}


def removed(db: str) -> dict[str, str]:
    rows = fetch(db, "SELECT id, at FROM accounts__tombstones")
    return {key: str(at).replace(" ", "T") for key, at in rows}


def reference(
    batches: list[list[Record]], ties: str
) -> tuple[dict[str, tuple[str, int]], dict[str, str], list[tuple[int, int, int, int]]]:
    """Runs applied record by record, tombstones included: a record wins when newer (or as new,
    for `replace`) than its key's row or tombstone; behind the watermark, one the row or
    tombstone held at the run's start is skipped (for `replace` and the same time, only when no
    earlier record of the run has its key and time). Returns the live rows, the tombstones and
    (loaded, deleted, stale, skipped) per run."""
    state: dict[str, tuple[str, int, bool]] = {}
    watermark: str | None = None
    counts = []
    for batch in batches:
        before = dict(state)
        seen: set[tuple[str, str]] = set()
        loaded = deleted = stale = skipped = 0
        for key, ts, value, closed in batch:
            held = before.get(key)
            tie_before = (key, ts) in seen
            seen.add((key, ts))
            if watermark is not None and ts <= watermark and held is not None:
                same = held[2] == closed and (closed or held[1] == value) and not tie_before
                if held[0] > ts or (held[0] == ts and (ties == "keep" or same)):
                    skipped += 1
                    continue
            current = state.get(key)
            if current is None or ts > current[0] or (ties == "replace" and ts == current[0]):
                state[key] = (ts, value, closed)
                loaded += 1
                deleted += closed
            else:
                stale += 1
            watermark = ts if watermark is None else max(watermark, ts)
        counts.append((loaded, deleted, stale, skipped))
    rows = {k: (ts, v) for k, (ts, v, closed) in state.items() if not closed}
    tombstones = {k: ts for k, (ts, _, closed) in state.items() if closed}
    return rows, tombstones, counts


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=BATCHES, ties=st.sampled_from(["keep", "replace"]))
def test_tombstones_match_the_record_by_record_reference(
    db_factory: Any, tmp_path_factory: Any, batches: list[list[Record]], ties: str
) -> None:
    """Over random runs mixing records and tombstones, the live rows, the tombstones and every
    run's counts equal the reference, under either tie rule."""
    folder = tmp_path_factory.mktemp("deletes")
    db, spec = db_factory(), accounts(ties)
    rows, tombstones, counts = reference(batches, ties)
    for number, batch in enumerate(batches):
        # force: a file whose content was loaded before is a record-level rerun, not a skip
        summary = run(write(folder / f"{number}.jsonl", batch), db, AGAIN, spec=spec)
        got = (summary.loaded, summary.deleted, summary.stale, summary.skipped)
        assert got == counts[number]
        assert summary.is_balanced()
    assert alive(db) == rows
    assert removed(db) == tombstones


def test_a_newer_tombstone_removes_the_key(db: str, tmp_path: Path) -> None:
    """A tombstone newer than the stored row deletes it, keeps its time, and says `delete`."""
    spec = accounts()
    run(write(tmp_path / "open.jsonl", [("a", "2025-01-01T01:00:00", 5, False)]), db, spec=spec)
    closing = [("a", "2025-01-01T02:00:00", 0, True)]
    summary = run(write(tmp_path / "close.jsonl", closing), db, spec=spec)
    assert (summary.loaded, summary.deleted) == (1, 1)
    assert alive(db) == {}
    assert removed(db) == {"a": "2025-01-01T02:00:00"}
    steps = fetch(db, f"SELECT step FROM lineage WHERE run_id = {summary.run_id} ORDER BY id")
    assert [step for (step,) in steps] == ["stage", "delete"]


def test_an_older_record_never_brings_the_key_back(db: str, tmp_path: Path) -> None:
    """After a tombstone, an older record of its key (late, or later in the same file) is
    skipped or stale; the key stays deleted."""
    spec = accounts()
    records = [("a", "2025-01-01T02:00:00", 0, True), ("a", "2025-01-01T01:00:00", 5, False)]
    first = run(write(tmp_path / "same-file.jsonl", records), db, spec=spec)
    assert (first.deleted, first.stale) == (1, 1)
    late = [("a", "2025-01-01T01:30:00", 7, False)]
    second = run(write(tmp_path / "late.jsonl", late), db, spec=spec)
    assert (second.loaded, second.skipped) == (0, 1)
    assert alive(db) == {}


def test_a_rerun_with_a_record_and_its_tombstone_at_one_time_stays_deleted(
    db: str, tmp_path: Path
) -> None:
    """Under ties = "replace", a record and its key's tombstone at the same time, loaded again:
    the tombstone is not skipped as held, since the record before it brings the key back first;
    the key ends deleted, as one by one (it used to come back)."""
    spec = accounts("replace")
    at = "2025-01-01T09:00:00"
    path = write(tmp_path / "d.jsonl", [("a", at, 10, False), ("a", at, 0, True)])
    run(path, db, spec=spec)
    assert (alive(db), removed(db)) == ({}, {"a": at})
    again = run(path, db, RunOptions(force=True), spec=spec)
    assert (alive(db), removed(db)) == ({}, {"a": at})
    assert (again.loaded, again.deleted, again.skipped) == (2, 1, 0)


def test_a_newer_record_recreates_the_key(db: str, tmp_path: Path) -> None:
    """A record newer than the tombstone brings the key back and the tombstone goes."""
    spec = accounts()
    run(write(tmp_path / "close.jsonl", [("a", "2025-01-01T02:00:00", 0, True)]), db, spec=spec)
    reopen = [("a", "2025-01-01T03:00:00", 9, False)]
    summary = run(write(tmp_path / "reopen.jsonl", reopen), db, spec=spec)
    assert (summary.loaded, summary.deleted) == (1, 0)
    assert alive(db) == {"a": ("2025-01-01T03:00:00", 9)}
    assert removed(db) == {}


def test_delete_field_must_be_a_boolean_outside_the_key() -> None:
    """A delete_field that is no declared boolean field is a config mistake."""
    with pytest.raises(ValidationError, match="must name a declared boolean field"):
        PipelineSpec.model_validate(
            accounts().model_dump(exclude={"name"}) | {"name": "x", "delete_field": "balance"}
        )
