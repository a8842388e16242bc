"""Every input record has exactly one fate, in every run (property test)."""

from datetime import datetime, timedelta
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capstone import RunOptions, run
from tests.conftest import fetch

TS = st.integers(0, 48).map(lambda h: (datetime(2025, 1, 1) + timedelta(hours=h)).isoformat())
VALID = st.fixed_dictionaries(
    {
        "key": st.sampled_from(["a", "b", "c"]),
        "name": st.just("n"),
        "value": st.floats(-1e6, 1e6),
        "ts": TS,
    }
)
INVALID = st.one_of(
    VALID.map(lambda r: r | {"key": ""}),
    VALID.map(lambda r: r | {"value": "x"}),
    VALID.map(lambda r: r | {"ts": "not a time"}),
    VALID.map(lambda r: {k: v for k, v in r.items() if k != "name"}),
)
LINE = st.one_of(
    VALID.map(lambda r: orjson.dumps(r).decode()),
    INVALID.map(lambda r: orjson.dumps(r).decode()),
    st.sampled_from(["{oops", "[1, 2]", "42", '"text"', "null"]),
)
RUNS = st.lists(st.tuples(st.lists(LINE, max_size=25), st.integers(0, 30)), min_size=1, max_size=3)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(runs=RUNS)
def test_every_record_has_exactly_one_fate(
    db_factory: Any, tmp_path_factory: Any, runs: Any
) -> None:
    """input = staged + rejected + skipped and staged = loaded + stale; lineage matches the counts."""
    db = db_factory()
    folder = tmp_path_factory.mktemp("acct")
    for number, (lines, lookback_hours) in enumerate(runs):
        path = folder / f"{number}.jsonl"
        path.write_text("".join(line + "\n" for line in lines))
        summary = run(
            str(path), db, RunOptions(lookback=timedelta(hours=lookback_hours), force=True)
        )
        assert summary.input_records == len(lines)
        assert summary.is_balanced()
        [(lineage,)] = fetch(db, f"SELECT COUNT(*) FROM lineage WHERE run_id = {summary.run_id}")
        assert (
            lineage
            == summary.lineage_entries
            == 2 * summary.staged + summary.rejected + summary.skipped
        )
    [(letters,)] = fetch(db, "SELECT COUNT(*) FROM dead_letters")
    [(new_letters,)] = fetch(db, "SELECT COALESCE(SUM(dead_letters), 0) FROM run_log")
    assert letters == new_letters
