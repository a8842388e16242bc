"""The guarded merge equals applying records one by one, newest ts wins (property test)."""

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capstone import RunOptions, run
from capstone.spec import FieldSpec, PipelineSpec
from capstone.store import open_store
from tests.conftest import change, fetch

KEYS = st.sampled_from(["a", "b", "c", "d"])
TIMES = st.integers(0, 6).map(lambda h: (datetime(2025, 1, 1) + timedelta(hours=h)).isoformat())
RECORD = st.tuples(KEYS, TIMES, st.integers(0, 1000))
BATCHES = st.lists(st.lists(RECORD, max_size=12), min_size=1, max_size=4)
EVERYTHING = RunOptions(lookback=timedelta(days=100_000), force=True)  # test the guard alone


def reference(
    batches: list[list[tuple[str, str, int]]],
) -> tuple[dict[str, tuple[str, int]], list[int]]:
    """Apply records in order; a record replaces the stored one only if its ts is strictly newer."""
    target: dict[str, tuple[str, int]] = {}
    loaded_per_run = []
    for batch in batches:
        loaded = 0
        for key, ts, value in batch:
            if key not in target or ts > target[key][0]:
                target[key] = (ts, value)
                loaded += 1
        loaded_per_run.append(loaded)
    return target, loaded_per_run


def write(path: Path, batch: list[tuple[str, str, int]]) -> str:
    import orjson

    path.write_bytes(
        b"".join(
            orjson.dumps({"key": k, "name": "n", "value": v, "ts": t}) + b"\n" for k, t, v in batch
        )
    )
    return str(path)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=BATCHES)
def test_merge_matches_one_by_one_reference(
    db_factory: Any, tmp_path_factory: Any, batches: Any
) -> None:
    """Over random batches with repeated keys and ties, target and `loaded` equal the reference."""
    folder = tmp_path_factory.mktemp("merge")
    db = db_factory()
    expected, loaded = reference(batches)
    for number, batch in enumerate(batches):
        summary = run(write(folder / f"{number}.jsonl", batch), db, EVERYTHING)
        assert summary.loaded == loaded[number]
        assert summary.stale == len(batch) - loaded[number]
    rows = fetch(db, "SELECT key, ts, value FROM target")
    actual = {key: (str(ts).replace(" ", "T"), int(value)) for key, ts, value in rows}
    assert actual == expected


# Fractions, whole seconds, equal times and times before 1970 (within EVERYTHING's lookback, so
# nothing is skipped as covered): fates are decided on microseconds and stale details written
# back as text, so both must agree with the text.
FINE_TIMES = st.sampled_from(
    [
        "1900-01-01T00:00:00.000001",
        "1969-12-31T23:59:58.500000",
        "1969-12-31T23:59:59",
        "2025-01-01T00:00:00",
        "2025-01-01T00:00:01.250000",
        "2025-01-01T00:00:01.500000",
        "2025-01-01T00:00:03.000001",
    ]
)
FINE_BATCHES = st.lists(
    st.lists(st.tuples(KEYS, FINE_TIMES, st.integers(0, 9)), max_size=10), min_size=1, max_size=3
)


def reference_lineage(batches: list[list[tuple[str, str, int]]]) -> list[list[tuple[str, str]]]:
    """Each record's fate and detail, applying records one by one: `load` with `ts T` (or, at
    or behind the watermark earlier runs left, `late: T behind watermark W`), or `stale` with
    `kept ts NEWEST over T`, NEWEST the newest time before it for its key."""
    newest: dict[str, str] = {}
    watermark: str | None = None
    fates = []
    for batch in batches:
        run_fates = []
        for key, ts, _ in batch:
            if key in newest and ts <= newest[key]:
                run_fates.append(("stale", f"kept ts {newest[key]} over {ts}"))
                continue
            newest[key] = ts
            late = watermark is not None and ts <= watermark
            run_fates.append(
                ("load", f"late: {ts} behind watermark {watermark}" if late else f"ts {ts}")
            )
        fates.append(run_fates)
        watermark = max([watermark or "", *(ts for _, ts, _ in batch)]) or None
    return fates


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=FINE_BATCHES)
def test_lineage_fates_and_details_match_one_by_one_reference(
    db_factory: Any, tmp_path_factory: Any, batches: Any
) -> None:
    """Every record's fate and lineage detail (the stored row's or an earlier record's time that
    beat it, with or without a fraction) equal the reference, within a file and across runs."""
    folder = tmp_path_factory.mktemp("fates")
    db = db_factory()
    for number, (batch, expected) in enumerate(
        zip(batches, reference_lineage(batches), strict=True)
    ):
        summary = run(write(folder / f"{number}.jsonl", batch), db, EVERYTHING)
        rows = fetch(
            db,
            "SELECT step, detail FROM lineage WHERE step IN ('load', 'stale') "
            f"AND run_id = {summary.run_id} ORDER BY position",
        )
        assert rows == expected


# -- the same property over a generated pipeline definition ---------------------------------------

FIELD_VALUES: dict[str, Any] = {
    "string": st.text("xyz", min_size=1, max_size=3),
    "integer": st.integers(-5, 5),
    "float": st.floats(-1e6, 1e6, allow_nan=False),
    "boolean": st.booleans(),
    "timestamp": TIMES,
    "json": st.dictionaries(st.sampled_from("pq"), st.integers(0, 3), max_size=2),
}
KEY_VALUES = {"string": st.sampled_from(["a", "b"]), "integer": st.sampled_from([1, 2])}


@st.composite
def pipelines(draw: Any) -> PipelineSpec:
    """A random valid definition: 1-2 key fields, an event time, 0-3 other fields of any type."""
    key_types = draw(st.lists(st.sampled_from(["string", "integer"]), min_size=1, max_size=2))
    other_types = draw(st.lists(st.sampled_from(sorted(FIELD_VALUES)), max_size=3))
    fields: dict[str, FieldSpec] = {
        f"k{i}": FieldSpec(type=kind) for i, kind in enumerate(key_types)
    }
    fields["at"] = FieldSpec(type="timestamp")
    for i, kind in enumerate(other_types):
        fields[f"v{i}"] = FieldSpec(type=kind, required=draw(st.booleans()))
    return PipelineSpec(
        name="generated",
        key=tuple(f"k{i}" for i in range(len(key_types))),
        event_time="at",
        fields=fields,
        unknown=draw(st.sampled_from(["keep", "drop"])),
    )


@st.composite
def pipeline_and_batches(draw: Any) -> tuple[PipelineSpec, list[list[dict[str, Any]]]]:
    spec = draw(pipelines())
    record = st.fixed_dictionaries(
        {
            name: KEY_VALUES[f.type]
            if name in spec.key
            else TIMES
            if name == "at"
            else FIELD_VALUES[f.type]
            for name, f in spec.fields.items()
        }
    )
    return spec, draw(st.lists(st.lists(record, max_size=10), min_size=1, max_size=3))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=pipeline_and_batches())
def test_merge_matches_reference_over_generated_schemas(
    db_factory: Any, tmp_path_factory: Any, case: Any
) -> None:
    """For random definitions (composite keys, every type), the target equals one-by-one apply."""
    import orjson

    spec, batches = case
    folder = tmp_path_factory.mktemp("schema")
    db = db_factory()
    target: dict[tuple[Any, ...], dict[str, Any]] = {}
    for number, batch in enumerate(batches):
        loaded = 0
        for record in batch:
            key = tuple(record[k] for k in spec.key)
            if key not in target or record["at"] > target[key]["at"]:
                target[key] = record
                loaded += 1
        path = folder / f"{number}.jsonl"
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in batch))
        summary = run(str(path), db, EVERYTHING, spec=spec)
        assert (summary.loaded, summary.stale, summary.rejected) == (loaded, len(batch) - loaded, 0)
    columns = ", ".join(spec.columns)
    rows = fetch(db, f"SELECT {columns} FROM {spec.target}")
    actual = {
        tuple(row[: len(spec.key)]): {
            name: stored(spec.fields[name].type, value)
            for name, value in zip(spec.columns, row, strict=True)
        }
        for row in rows
    }
    assert actual == {
        key: {n: record.get(n) for n in spec.columns} for key, record in target.items()
    }


def stored(kind: str, value: Any) -> Any:
    """A stored value in the form it was sent (both backends, every type)."""
    import orjson

    if value is None:
        return None
    if kind == "boolean":
        return bool(value)
    if kind == "timestamp":
        return str(value).replace(" ", "T")
    if kind == "json" and isinstance(value, str):
        return orjson.loads(value)
    return value


def test_a_database_of_two_lineage_rows_per_record_migrates_to_one(db: str, sample: str) -> None:
    """A database written before lineage kept one row per record (a `stage` row beside each
    load or stale, steps and details as text) reads the same after the migrations, with half the
    rows stored, compact."""
    run(sample, db)
    before = fetch(db, "SELECT run_id, step, key, position, detail FROM lineage ORDER BY id")
    # Put the database back as the older capstone left it, and forget the two migrations.
    [(version,)] = fetch(db, "SELECT MAX(version) FROM schema_migrations")
    change(
        db,
        "CREATE TABLE old_lineage AS SELECT id, run_id, step, key, position, detail FROM lineage",
    )
    change(db, "DROP VIEW lineage")
    change(db, "DROP TABLE lineage_records")
    change(db, "ALTER TABLE old_lineage RENAME TO lineage")
    change(db, f"DELETE FROM schema_migrations WHERE version >= {version - 1}")
    assert fetch(db, "SELECT COUNT(*) FROM lineage") == [(12,)]
    open_store(db).close()
    assert fetch(db, "SELECT COUNT(*) FROM lineage_records") == [(7,)]
    assert fetch(db, "SELECT COUNT(*) FROM lineage_records WHERE detail LIKE 'ts %'") == [(0,)]
    after = fetch(db, "SELECT run_id, step, key, position, detail FROM lineage")
    assert sorted(after, key=str) == sorted(before, key=str)
