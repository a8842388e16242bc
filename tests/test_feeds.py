"""Many input files in one invocation: one run per file, in order, and what a failure stops."""

import json
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from capstone.cli import app
from capstone.errors import ConfigError, InputError
from capstone.pipeline import run_many
from tests.conftest import event, fetch


def write_day(folder: Path, day: int, keys: int = 3, name: str | None = None) -> Path:
    """One daily JSON Lines file of `keys` events, all on that day."""
    path = folder / (name or f"events-2025-01-{day:02d}.jsonl")
    lines = [
        orjson.dumps(event(f"k{day}-{n}", f"2025-01-{day:02d}T0{n}:00:00Z")) for n in range(keys)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def cut_gzip(path: Path) -> Path:
    """A gzip file cut off in the middle: reading it fails."""
    path.write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xab\x56\xca")
    return path


class TestRunMany:
    def test_each_file_is_its_own_run_in_name_order(self, db: str, tmp_path: Path) -> None:
        """A folder of three files gives three successful runs, one per file, in name order."""
        paths = [write_day(tmp_path, day) for day in (3, 1, 2)]
        feed = run_many([str(tmp_path)], db)
        assert [r.source for r in feed.runs] == [str(p) for p in sorted(paths)]
        assert [r.loaded for r in feed.runs] == [3, 3, 3]
        assert fetch(db, "SELECT COUNT(*) FROM run_log") == [(3,)]
        assert fetch(db, "SELECT COUNT(*) FROM target") == [(9,)]

    def test_a_failing_file_stops_after_the_committed_ones(self, db: str, tmp_path: Path) -> None:
        """File 3 of 5 fails: 1 and 2 stay committed, 3 is logged failed, 4 and 5 are unread."""
        for day in (1, 2, 4, 5):
            write_day(tmp_path, day)
        cut_gzip(tmp_path / "events-2025-01-03.jsonl.gz")
        feed = run_many([str(tmp_path)], db)
        assert [r.status for r in feed.runs] == ["success", "success", "failed"]
        assert "cut off" in (feed.runs[2].error or "")
        assert [Path(p).name for p in feed.unread] == [
            "events-2025-01-04.jsonl",
            "events-2025-01-05.jsonl",
        ]
        assert fetch(db, "SELECT COUNT(*) FROM target") == [(6,)]

    def test_keep_going_loads_the_files_after_a_failure(self, db: str, tmp_path: Path) -> None:
        """With keep_going the files after a failed one load; the failed one is still reported."""
        for day in (1, 2, 4):
            write_day(tmp_path, day)
        cut_gzip(tmp_path / "events-2025-01-03.jsonl.gz")
        feed = run_many([str(tmp_path)], db, keep_going=True)
        assert [r.status for r in feed.runs] == ["success", "success", "failed", "success"]
        assert [r.run_id for r in feed.failed] == [feed.runs[2].run_id]
        assert fetch(db, "SELECT COUNT(*) FROM target") == [(9,)]

    def test_an_empty_folder_is_an_error(self, db: str, tmp_path: Path) -> None:
        """A folder that holds no file is refused before anything runs."""
        (tmp_path / "empty").mkdir()
        with pytest.raises(ConfigError, match="holds no file"):
            run_many([str(tmp_path / "empty")], db)

    def test_a_missing_file_is_an_input_error(self, db: str, tmp_path: Path) -> None:
        """A plain path that does not exist is refused, naming it."""
        with pytest.raises(InputError, match=r"nope\.jsonl"):
            run_many([str(tmp_path / "nope.jsonl")], db)


class TestCliFeeds:
    def test_two_inputs_load_both(self, runner: CliRunner, db: str, tmp_path: Path) -> None:
        """--input A --input B loads both files, one run each (not only B)."""
        a, b = write_day(tmp_path, 1), write_day(tmp_path, 2)
        result = runner.invoke(app, ["run", "-i", str(a), "-i", str(b), "--db", db, "--json"])
        assert result.exit_code == 0, result.output
        document = json.loads(result.stdout)
        assert [r["source"] for r in document["runs"]] == [str(a), str(b)]
        assert document["skipped_files"] == []
        assert fetch(db, "SELECT COUNT(*) FROM target") == [(6,)]

    def test_table_has_a_row_per_file_and_a_total(
        self, runner: CliRunner, db: str, tmp_path: Path
    ) -> None:
        """The table lists each file and a total row."""
        for day in (1, 2):
            write_day(tmp_path, day)
        result = runner.invoke(app, ["run", "-i", str(tmp_path), "--db", db])
        assert result.exit_code == 0, result.output
        assert "events-2025-01-02.jsonl" in result.output
        assert "total" in result.output
        assert "2/2 ok" in result.output

    def test_a_failed_file_exits_1_naming_it(
        self, runner: CliRunner, db: str, tmp_path: Path
    ) -> None:
        """A failing file makes the invocation exit 1 with a line naming the file and the rest."""
        write_day(tmp_path, 1)
        cut_gzip(tmp_path / "events-2025-01-02.jsonl.gz")
        write_day(tmp_path, 3)
        result = runner.invoke(app, ["run", "-i", str(tmp_path), "--db", db])
        assert result.exit_code == 1
        assert "1 file of 3 failed" in result.stderr
        assert "events-2025-01-02.jsonl.gz" in result.stderr
        assert "--keep-going" in result.stderr
        keep = runner.invoke(app, ["run", "-i", str(tmp_path), "--db", db, "--keep-going"])
        assert keep.exit_code == 1
        assert fetch(db, "SELECT COUNT(*) FROM target") == [(6,)]

    def test_a_glob_that_matches_nothing_exits_2(
        self, runner: CliRunner, db: str, tmp_path: Path
    ) -> None:
        """A quoted glob that matches no file is a usage error naming it."""
        result = runner.invoke(app, ["run", "-i", str(tmp_path / "*.gz"), "--db", db])
        assert result.exit_code == 2
        assert "matches no file" in result.stderr
