"""Many input files in one invocation: one run per file, in order, and what a failure stops."""

import bz2
import contextlib
import gzip
import hashlib
import io
import json
import lzma
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import zstandard
from typer.testing import CliRunner

import capstone.manifest
import capstone.pipeline
from capstone.cli import app
from capstone.errors import ConfigError, InputError
from capstone.limits import RejectLimit
from capstone.manifest import FileIdentity
from capstone.pipeline import RunOptions, run, run_many
from capstone.spec import PipelineSpec
from capstone.summary import RunStatus
from tests.conftest import KEEP_REJECTS, event, fetch


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

    def test_a_failed_files_status_is_a_run_status(self, db: str, tmp_path: Path) -> None:
        """A failed file's summary, read back from the run log, has the same status type as a
        successful one's: `RunStatus`, not the plain text stored in the column."""
        write_day(tmp_path, 1)
        cut_gzip(tmp_path / "events-2025-01-02.jsonl.gz")
        feed = run_many([str(tmp_path)], db)
        assert [type(r.status) for r in feed.runs] == [RunStatus, RunStatus]
        assert feed.runs[1].status is RunStatus.FAILED

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

    def test_keep_going_names_every_failed_file_in_its_last_line(
        self, runner: CliRunner, db: str, tmp_path: Path
    ) -> None:
        """With --keep-going and two failed files of three, the error line counts them, names
        each by run and file, and points to `capstone runs --failed` for the reasons."""
        first = cut_gzip(tmp_path / "events-2025-01-01.jsonl.gz")
        write_day(tmp_path, 2)
        third = cut_gzip(tmp_path / "events-2025-01-03.jsonl.gz")
        result = runner.invoke(app, ["run", "-i", str(tmp_path), "--db", db, "--keep-going"])
        assert result.exit_code == 1
        assert result.stderr == (
            f"capstone: error: 2 files of 3 failed: run 1 ({first}), run 3 ({third}); "
            "`capstone runs --failed` shows why each failed\n"
        )

    def test_a_glob_that_matches_nothing_exits_2(
        self, runner: CliRunner, db: str, tmp_path: Path
    ) -> None:
        """A quoted glob that matches no file is a usage error naming it."""
        result = runner.invoke(app, ["run", "-i", str(tmp_path / "*.gz"), "--db", db])
        assert result.exit_code == 2
        assert "matches no file" in result.stderr


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "": lambda data: data,
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
    ".zst": zstandard.ZstdCompressor().compress,
}


def landing(folder: Path, days: int = 12) -> list[Path]:
    """A landing folder of daily files, each compressed another way (or not at all)."""
    folder.mkdir(exist_ok=True)
    suffixes = list(COMPRESSORS)
    paths = []
    for day in range(1, days + 1):
        suffix = suffixes[day % len(suffixes)]
        plain = write_day(folder, day, keys=4)
        path = plain.with_name(plain.name + suffix)
        path.write_bytes(COMPRESSORS[suffix](plain.read_bytes()))
        if suffix:
            plain.unlink()
        paths.append(path)
    return paths


def counts(db: str) -> dict[str, int]:
    tables = ("run_log", "target", "lineage", "dead_letters", "files", "run_steps")
    return {t: fetch(db, f"SELECT COUNT(*) FROM {t}")[0][0] for t in tables}


class TestManifest:
    def test_thirty_mixed_files_load_once_then_only_what_changed(
        self, runner: CliRunner, db: str, tmp_path: Path
    ) -> None:
        """30 daily files (gzip, bzip2, xz, zstd, plain) load; loaded again every file is skipped
        and only the run log grows; then a renamed file is skipped, a changed one loads saying
        which run it changed since, and a new one loads."""
        folder = tmp_path / "landing"
        paths = landing(folder, days=30)
        assert {p.suffix for p in paths} == {".gz", ".bz2", ".xz", ".zst", ".jsonl"}
        first = run_many([str(folder)], db)
        assert [r.loaded for r in first.runs] == [4] * 30
        before = counts(db)
        assert (before["target"], before["files"]) == (120, 30)
        again = run_many([str(folder)], db)
        assert [r.same_content_as for r in again.runs] == [r.run_id for r in first.runs]
        assert all(r.skipped == r.input_records == 4 and r.lineage_entries == 0 for r in again.runs)
        assert all(r.is_balanced() for r in again.runs)
        after = counts(db)
        assert after.pop("run_log") == before.pop("run_log") + 30
        assert after == before
        renamed = paths[6].rename(folder / "redelivered-07.jsonl.bz2")
        write_day(folder, 12, keys=5, name=paths[11].name)  # corrected, plain now
        write_day(folder, 31)
        result = runner.invoke(app, ["run", "-i", str(folder), "--db", db, "--json"])
        assert result.exit_code == 0, result.output
        by_name = {Path(r["source"]).name: r for r in json.loads(result.stdout)["runs"]}
        assert len(by_name) == 31
        assert by_name[renamed.name]["same_content_as"] == first.runs[6].run_id
        changed = by_name[paths[11].name]
        assert changed["changed_since"] == first.runs[11].run_id
        assert (changed["input_records"], changed["loaded"], changed["skipped"]) == (5, 1, 4)
        new = by_name["events-2025-01-31.jsonl"]
        assert (new["loaded"], new.get("same_content_as"), new.get("changed_since")) == (
            3,
            None,
            None,
        )
        assert sum(r["loaded"] for r in by_name.values()) == 4
        assert fetch(db, "SELECT COUNT(*) FROM target") == [(120 + 1 + 3,)]
        assert fetch(db, "SELECT COUNT(*) FROM files") == [(32,)]
        table = runner.invoke(app, ["runs", "--db", db, "--limit", "40"])
        assert f"changed since run {first.runs[11].run_id}" in table.output

    def test_a_file_appended_after_hashing_is_recorded_as_read(
        self, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A record appended between the manifest look-up and the read is loaded, and the
        manifest holds the hash and size of the bytes read, so a rerun skips the file."""
        path = write_day(tmp_path, 1)
        identify = capstone.manifest.identify

        def identify_then_append(name: str) -> FileIdentity | None:
            identity = identify(name)
            with path.open("ab") as fh:
                fh.write(orjson.dumps(event("late", "2025-01-01T09:00:00Z")) + b"\n")
            return identity

        monkeypatch.setattr(capstone.pipeline, "identify", identify_then_append)
        [first] = run_many([str(path)], db).runs
        monkeypatch.undo()
        assert (first.input_records, first.loaded) == (4, 4)
        content = path.read_bytes()
        assert fetch(db, "SELECT sha256, size FROM files") == [
            (hashlib.sha256(content).hexdigest(), len(content))
        ]
        [again] = run_many([str(path)], db).runs
        assert again.same_content_as == first.run_id

    def test_renamed_changed_and_new_files(self, db: str, tmp_path: Path) -> None:
        """A renamed file is skipped, a changed one loads again saying so, a new one loads."""
        folder = tmp_path / "landing"
        paths = landing(folder, days=5)
        first = run_many([str(folder)], db)
        paths[0].rename(folder / "renamed-delivery.jsonl.bz2.again")
        write_day(folder, 2, keys=6, name=paths[1].name)  # corrected, plain now
        write_day(folder, 9)
        feed = run_many([str(folder)], db)
        by_name = {Path(r.source or "").name: r for r in feed.runs}
        renamed = by_name["renamed-delivery.jsonl.bz2.again"]
        assert renamed.same_content_as == first.runs[0].run_id
        changed = by_name[paths[1].name]
        assert changed.changed_since == first.runs[1].run_id
        assert (changed.input_records, changed.loaded, changed.skipped) == (6, 2, 4)
        new = by_name["events-2025-01-09.jsonl"]
        assert (new.loaded, new.same_content_as, new.changed_since) == (3, None, None)
        assert fetch(db, "SELECT COUNT(*) FROM target") == [(4 * 5 + 2 + 3,)]

    def test_force_loads_known_content(self, db: str, tmp_path: Path) -> None:
        """With force a file is read again and recorded again; newest-wins keeps the target as it was."""
        path = write_day(tmp_path, 1)
        run_many([str(path)], db)
        again = run_many([str(path)], db, RunOptions(force=True))
        assert again.runs[0].same_content_as is None
        assert again.runs[0].skipped == 3
        assert again.runs[0].lineage_entries > 0
        assert fetch(db, "SELECT COUNT(*) FROM files") == [(2,)]

    def test_a_failed_file_leaves_no_manifest_row_and_loads_next_time(
        self, db: str, tmp_path: Path
    ) -> None:
        """File 3 of 5 fails: next invocation skips 1-2 by manifest and loads 3-5."""
        for day in (1, 2, 4, 5):
            write_day(tmp_path, day)
        broken = cut_gzip(tmp_path / "events-2025-01-03.jsonl.gz")
        first = run_many([str(tmp_path)], db)
        assert [r.status for r in first.runs] == ["success", "success", "failed"]
        assert fetch(db, "SELECT COUNT(*) FROM files") == [(2,)]
        broken.write_bytes(
            gzip.compress(
                (tmp_path / "events-2025-01-01.jsonl").read_bytes().replace(b"k1-", b"k3-")
            )
        )
        second = run_many([str(tmp_path)], db)
        assert [r.error for r in second.runs][:1] == [None]
        assert [r.same_content_as is not None for r in second.runs] == [
            True,
            True,
            False,
            False,
            False,
        ]
        assert [r.loaded for r in second.runs] == [0, 0, 3, 3, 3]
        assert fetch(db, "SELECT COUNT(*) FROM files") == [(5,)]

    def test_stdin_has_no_manifest_entry(
        self, db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Standard input cannot be hashed before reading: it loads, and the manifest stays empty."""
        data = write_day(tmp_path, 1).read_bytes()
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
        summary = run("-", db)
        assert summary.loaded == 3
        assert fetch(db, "SELECT COUNT(*) FROM files") == [(0,)]


class TestCliManifest:
    def test_rerun_lists_skipped_files_and_files_lists_the_manifest(
        self, runner: CliRunner, db: str, tmp_path: Path
    ) -> None:
        """--json names skipped files; `capstone files` lists the manifest newest first."""
        folder = tmp_path / "landing"
        landing(folder, days=3)
        assert runner.invoke(app, ["run", "-i", str(folder), "--db", db]).exit_code == 0
        result = runner.invoke(app, ["run", "-i", str(folder), "--db", db, "--json"])
        assert result.exit_code == 0, result.output
        document = json.loads(result.stdout)
        assert len(document["skipped_files"]) == 3
        assert all(r["same_content_as"] for r in document["runs"])
        listed = runner.invoke(app, ["files", "--db", db, "--json", "--limit", "2"])
        assert listed.exit_code == 0, listed.output
        rows = json.loads(listed.stdout)
        assert [r["run_id"] for r in rows] == [3, 2]
        assert rows[0]["records"] == 4
        table = runner.invoke(app, ["files", "--db", db])
        assert "loaded files" in table.output

    def test_single_file_rerun_says_which_run_had_it(
        self, runner: CliRunner, db: str, sample: str
    ) -> None:
        """Loading the seed twice: the second run skips all 7 and names run 1."""
        assert runner.invoke(app, ["run", "-i", sample, "--db", db]).exit_code == 0
        result = runner.invoke(app, ["run", "-i", sample, "--db", db])
        assert result.exit_code == 0, result.output
        assert "same content as run 1" in result.output
        forced = runner.invoke(app, ["run", "-i", sample, "--db", db, "--force", "--json"])
        assert forced.exit_code == 0, forced.output
        summary = json.loads(forced.stdout)
        assert summary["skipped"] == 7
        assert "same_content_as" not in summary

    def test_a_format_given_for_a_file_already_loaded_is_said_not_applied(
        self, runner: CliRunner, db: str, sample: str
    ) -> None:
        """--format on a rerun of a loaded file: the skip stands (exit 0), and stderr says the
        format was not applied as the file was skipped unread, and that --force reads it."""
        assert runner.invoke(app, ["run", "-i", sample, "--db", db, "-q"]).exit_code == 0
        result = runner.invoke(app, ["run", "-i", sample, "--db", db, "--format", "csv"])
        assert result.exit_code == 0, result.output
        assert result.stderr == (
            f"capstone: --format csv not applied: {sample} was skipped unread as already loaded "
            "(run 1 loaded the same content); --force reads it again with --format csv\n"
        )

    def test_a_format_given_for_a_folder_already_loaded_is_said_not_applied(
        self, runner: CliRunner, db: str, tmp_path: Path
    ) -> None:
        """--format on a rerun of a loaded folder: one line on stderr counts the files it did
        not apply to, skipped unread, and names --force."""
        folder = tmp_path / "landing"
        landing(folder, days=3)
        assert runner.invoke(app, ["run", "-i", str(folder), "--db", db, "-q"]).exit_code == 0
        result = runner.invoke(app, ["run", "-i", str(folder), "--db", db, "--format", "jsonl"])
        assert result.exit_code == 0, result.output
        assert result.stderr == (
            "capstone: --format jsonl not applied to 3 files skipped unread as already loaded "
            "(earlier runs loaded the same content); --force reads them again with --format jsonl\n"
        )


def assert_only_its_failed_run_left(db: str) -> None:
    """A refused file kept nothing but its failed run-log row."""
    left = counts(db)
    assert left.pop("run_log") == 1
    assert set(left.values()) == {0}


def unparsable_values(n: int) -> list[dict[str, Any]]:
    """n events with their key and time whose `value` is text no float parses."""
    return [{**event(f"k{i}", "2025-01-01T00:00:00Z"), "value": "n/a"} for i in range(n)]


class TestMaxRejects:
    def test_a_file_over_the_limit_keeps_nothing(self, db: str, write_jsonl: Any) -> None:
        """Past --max-rejects the run fails, and no record, letter, lineage or manifest row stays."""
        good = [event(f"k{n}", "2025-01-01T00:00:00Z") for n in range(8)]
        path = write_jsonl([*good, {"key": "x"}, {"key": "y"}])
        with pytest.raises(InputError, match=r"2 of 10 records rejected, over --max-rejects 10%"):
            run(path, db, RunOptions(max_rejects=RejectLimit.parse("10%")))
        assert_only_its_failed_run_left(db)
        assert fetch(db, "SELECT status FROM run_log") == [("failed",)]

    def test_at_the_limit_the_file_loads(self, db: str, write_jsonl: Any) -> None:
        """Rejects up to the limit are dead-lettered as usual."""
        path = write_jsonl([event("a", "2025-01-01T00:00:00Z"), {"key": "x"}, {"key": "y"}])
        summary = run(path, db, RunOptions(max_rejects=RejectLimit.parse(2)))
        assert (summary.loaded, summary.rejected) == (1, 2)

    def test_a_count_limit_stops_early(self, db: str, write_jsonl: Any) -> None:
        """A count is judged batch by batch: the run stops once it is passed."""
        path = write_jsonl([{"n": n} for n in range(50)])
        with pytest.raises(InputError, match=r"3 of 3 records rejected, over --max-rejects 2"):
            run(path, db, RunOptions(max_rejects=RejectLimit.parse("2"), batch_size=3))

    def test_the_pipeline_setting_applies(self, db: str, write_jsonl: Any) -> None:
        """A pipeline's max_rejects setting refuses a file as the option does."""
        spec = PipelineSpec(name="strict", max_rejects="0")
        with pytest.raises(InputError, match="over --max-rejects 0"):
            run(write_jsonl([{"key": "x"}]), db, spec=spec)
        assert spec.definition() == PipelineSpec(name="strict").definition()

    def test_bad_limits_are_refused(self) -> None:
        """Only a count or a percentage up to 100% is a limit."""
        for bad in ("x", "-1", "1.5", "101%", True):
            with pytest.raises(ValueError, match="max_rejects"):
                RejectLimit.parse(bad)

    def test_cli_names_the_reason_and_the_likely_pipeline(
        self, runner: CliRunner, db: str, write_jsonl: Any
    ) -> None:
        """Every record lacking the key: one line with the count, the reason and a --pipeline hint."""
        path = write_jsonl([{"id": n, "created_at": "2025-01-01T00:00:00Z"} for n in range(5)])
        result = runner.invoke(app, ["run", "-i", path, "--db", db, "--max-rejects", "5%"])
        assert result.exit_code == 1
        assert "5 of 5 records rejected, over --max-rejects 5%" in result.stderr
        assert "most common reason: key.missing" in result.stderr
        assert "another pipeline (--pipeline NAME" in result.stderr
        bad = runner.invoke(app, ["run", "-i", path, "--db", db, "--max-rejects", "lots"])
        assert bad.exit_code == 2
        assert "--max-rejects must be a count" in bad.stderr


class TestAnotherPipelinesFile:
    def test_a_file_without_the_key_fails_without_a_limit(
        self, runner: CliRunner, db: str, write_jsonl: Any
    ) -> None:
        """No record of 12 has the pipeline's key: the run fails (exit 1) in one line naming the
        field and the fix, and keeps nothing but its failed run-log row."""
        path = write_jsonl([{"id": f"k{n}", "ts": "2025-01-01T00:00:00Z"} for n in range(12)])
        result = runner.invoke(app, ["run", "-i", path, "--db", db])
        assert result.exit_code == 1
        assert "none of its 12 records has 'key', which pipeline 'events' needs" in result.stderr
        assert "--max-rejects 100%" in result.stderr
        assert_only_its_failed_run_left(db)

    def test_a_limit_of_100_percent_keeps_them_as_dead_letters(
        self, db: str, write_jsonl: Any
    ) -> None:
        """Asked for, every record of such a file becomes a dead letter, as before."""
        path = write_jsonl([{"id": f"k{n}", "ts": "2025-01-01T00:00:00Z"} for n in range(12)])
        summary = run(path, db, KEEP_REJECTS)
        assert (summary.status, summary.rejected, summary.dead_letters) == ("success", 12, 12)

    def test_a_few_bad_records_are_still_dead_letters(self, db: str, write_jsonl: Any) -> None:
        """Under ten records, or with one record that has the key, the run dead-letters the
        rest as usual: too few, or not all, to say the file is another pipeline's."""
        few = write_jsonl([{"id": n, "ts": "2025-01-01T00:00:00Z"} for n in range(9)])
        assert run(few, db).rejected == 9
        mixed = [{"id": n, "ts": "2025-01-02T00:00:00Z"} for n in range(20)]
        summary = run(write_jsonl([*mixed, event("a", "2025-01-02T00:00:00Z")]), db)
        assert (summary.loaded, summary.rejected) == (1, 20)

    def test_a_file_of_only_invalid_records_fails_naming_the_reasons(
        self, runner: CliRunner, db: str, write_jsonl: Any
    ) -> None:
        """Every one of 12 records has its key and time but fails validation (a field the
        producer now sends as text): nothing would load, so the run fails in one line naming the
        commonest reasons with their counts and the fixes, and keeps nothing."""
        bad = unparsable_values(12)
        result = runner.invoke(app, ["run", "-i", write_jsonl(bad), "--db", db])
        assert result.exit_code == 1
        assert "all 12 of its records were rejected (value.float_parsing 12)" in result.stderr
        assert "pipeline 'events' would load nothing from it" in result.stderr
        assert "`required = false`" in result.stderr
        assert "--max-rejects 100%" in result.stderr
        assert result.stderr.count("\n") == 1
        assert_only_its_failed_run_left(db)

    def test_a_replay_that_rejects_every_letter_again_succeeds(
        self, db: str, write_jsonl: Any
    ) -> None:
        """Replaying 12 letters that are all still bad is a normal answer, not a wrong file:
        the replay succeeds and updates the letters."""
        bad = unparsable_values(12)
        run(write_jsonl(bad), db, KEEP_REJECTS)
        summary = capstone.pipeline.replay(db)
        assert (summary.status, summary.rejected, summary.dead_letters_updated) == (
            "success",
            12,
            12,
        )

    def test_one_loaded_record_makes_the_others_dead_letters(
        self, db: str, write_jsonl: Any
    ) -> None:
        """With one valid record among 20 invalid ones the file is this pipeline's: it loads the
        one and dead-letters the rest, with a success status."""
        bad = unparsable_values(20)
        summary = run(write_jsonl([*bad, event("a", "2025-01-01T00:00:00Z")]), db)
        assert (summary.status, summary.loaded, summary.rejected) == ("success", 1, 20)


@pytest.mark.slow
def test_kill_9_in_file_3_of_5_keeps_files_1_and_2(db: str, tmp_path: Path) -> None:
    """SIGKILL during file 3: 1 and 2 stay committed with their manifest rows, 3 is rolled back;
    the next invocation skips 1 and 2 by the manifest and loads 3 to 5."""
    folder = tmp_path / "landing"
    folder.mkdir()
    for day in (1, 2, 4, 5):
        write_day(folder, day)
    with gzip.open(folder / "events-2025-01-03.jsonl.gz", "wt") as fh:
        for n in range(400_000):
            fh.write(
                f'{{"key": "big{n}", "name": "n", "value": 1, "ts": "2025-01-03T00:00:00Z"}}\n'
            )
    process = subprocess.Popen(
        [sys.executable, "-m", "capstone", "run", "-i", str(folder), "--db", db, "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        # Until the child has made its tables, there is nothing to read (on either backend).
        with contextlib.suppress(sqlite3.OperationalError, psycopg.Error):
            # File 3's running row is committed before its transaction starts; 400k records
            # take seconds, so half a second later the kill lands inside that transaction.
            if fetch(db, "SELECT run_id FROM run_log WHERE status = 'running'") == [(3,)]:
                time.sleep(0.5)
                break
        time.sleep(0.02)
    process.kill()
    process.communicate()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert fetch(db, "SELECT run_id FROM files ORDER BY run_id") == [(1,), (2,)]
    assert fetch(db, "SELECT COUNT(*) FROM target") == [(6,)]
    feed = run_many([str(folder)], db)
    assert [r.same_content_as for r in feed.runs] == [1, 2, None, None, None]
    assert [r.loaded for r in feed.runs] == [0, 0, 400_000, 3, 3]
    assert fetch(db, "SELECT status FROM run_log WHERE run_id = 3") == [("abandoned",)]
