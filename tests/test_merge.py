"""The guarded merge equals applying records one by one, newest ts wins (property test)."""

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capstone import RunOptions, run
from tests.conftest import fetch

KEYS = st.sampled_from(["a", "b", "c", "d"])
TIMES = st.integers(0, 6).map(lambda h: (datetime(2025, 1, 1) + timedelta(hours=h)).isoformat())
RECORD = st.tuples(KEYS, TIMES, st.integers(0, 1000))
BATCHES = st.lists(st.lists(RECORD, max_size=12), min_size=1, max_size=4)
EVERYTHING = RunOptions(lookback=timedelta(days=100_000))  # no skips: test the guard alone


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
