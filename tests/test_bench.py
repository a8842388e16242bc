"""The benchmark's floor does the same work as capstone, so the ratio it reports is honest."""

import gzip
from pathlib import Path

import pytest

from bench.__main__ import FEED_FILES, _feed_data
from bench._child import COUNTS
from bench.floor import load
from bench.generate import FORMATS, GenFormat, base_spec, incremental_spec, write
from capstone import RunOptions, run
from capstone.pipeline import run_many
from tests.conftest import fetch


def outcome(db: str) -> tuple[object, ...]:
    """What a load leaves behind: target rows, lineage per step, dead letters, watermark."""
    return (
        fetch(db, "SELECT key, name, value, ts, attributes FROM target ORDER BY key"),
        fetch(db, "SELECT step, COUNT(*) FROM lineage GROUP BY step ORDER BY step"),
        fetch(db, "SELECT position, key, reason, raw FROM dead_letters ORDER BY position"),
        fetch(db, "SELECT name, value FROM watermarks"),
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_floor_matches_capstone(tmp_path: Path, fmt: GenFormat) -> None:
    """On a generated file and an incremental one after it, the floor's counts and rows equal capstone's."""
    spec = base_spec(200, seed=7)
    first = write(spec, tmp_path / f"first.{fmt}", fmt)
    later = write(incremental_spec(spec, 50), tmp_path / f"later.{fmt}", fmt)
    again = write(spec, tmp_path / f"again.{fmt}", fmt)
    assert Path(again.path).read_bytes() == Path(first.path).read_bytes()  # seeded
    assert first.invalid > 0
    capstone_db, floor_db = str(tmp_path / "capstone.db"), str(tmp_path / "floor.db")
    for path in (first.path, later.path, first.path):
        # Record by record, as the floor does: not skipped whole by the file manifest.
        ours = run(path, capstone_db, RunOptions(force=True)).model_dump(include=set(COUNTS))
        floor = {key: value for key, value in load(path, floor_db).items() if key in COUNTS}
        assert floor == ours
    assert outcome(floor_db) == outcome(capstone_db)


def test_feed_folder_holds_the_plain_files_records(tmp_path: Path) -> None:
    """The feed scenario's folder is the plain file cut into 10 gzip files, in order, and loads
    the same target rows through run_many as the plain file does through run."""
    spec = base_spec(205, seed=7)
    folder = _feed_data(spec, tmp_path)
    parts = sorted(folder.iterdir())
    assert len(parts) == FEED_FILES
    plain = tmp_path / f"events-{spec.tag}.jsonl"
    assert b"".join(gzip.decompress(p.read_bytes()) for p in parts) == plain.read_bytes()
    feed = run_many([str(folder)], str(tmp_path / "feed.db"))
    assert not feed.failed
    run(str(plain), str(tmp_path / "plain.db"))
    rows = "SELECT key, name, value, ts FROM target ORDER BY key"
    assert fetch(str(tmp_path / "feed.db"), rows) == fetch(str(tmp_path / "plain.db"), rows)
