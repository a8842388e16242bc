"""--metrics-file: a run's counters in the Prometheus text format, written whole or not at all."""

import os
import re
import stat
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from capstone.cli import app
from capstone.errors import CapstoneError
from capstone.metrics import FATES, render_metrics, write_metrics
from capstone.summary import RunSummary

SAMPLE_LINE = re.compile(r"^(\w+)\{([^}]*)\} (\S+)$")


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The samples of a Prometheus text file, checking every line is a comment or a sample."""
    samples = {}
    for line in text.splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            continue
        match = SAMPLE_LINE.match(line)
        assert match, line
        name, labels, value = match.groups()
        pairs = frozenset(tuple(p.split("=", 1)) for p in labels.split(","))
        samples[name, frozenset((k, v.strip('"')) for k, v in pairs)] = float(value)
    return samples


def broken_input(folder: Path) -> str:
    """A JSON array with text after it: the run reads it and fails."""
    path = folder / "broken.json"
    path.write_text('[{"key": "a"}] {"key": "b"}')
    return str(path)


def value_of(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples[name, frozenset({"pipeline": "events", **labels}.items())]


class TestRun:
    def test_a_run_writes_its_counters(
        self, runner: CliRunner, db: str, sample: str, tmp_path: Path
    ) -> None:
        """A committed run writes its records by fate, duration, success 1, end time and run id."""
        path = tmp_path / "capstone.prom"
        before = time.time()
        result = runner.invoke(
            app, ["run", "-i", sample, "--db", db, "-q", "--metrics-file", str(path)]
        )
        assert result.exit_code == 0, result.output
        text = path.read_text(encoding="utf-8")
        assert 'capstone_run_records{fate="loaded",pipeline="events"} 5\n' in text
        found = parse(text)
        fates = {fate: value_of(found, "capstone_run_records", fate=fate) for fate in FATES}
        assert fates == {
            "staged": 5,
            "loaded": 5,
            "late": 0,
            "deleted": 0,
            "stale": 0,
            "rejected": 2,
            "skipped": 0,
        }
        assert value_of(found, "capstone_run_input_records") == 7
        assert value_of(found, "capstone_run_success") == 1
        assert value_of(found, "capstone_run_id") == 1
        assert value_of(found, "capstone_run_duration_seconds") >= 0
        assert before - 1 <= value_of(found, "capstone_run_timestamp_seconds") <= time.time() + 1
        assert stat.S_IMODE(path.stat().st_mode) == 0o644

    def test_a_failed_run_writes_success_0(
        self, runner: CliRunner, db: str, tmp_path: Path
    ) -> None:
        """A run that fails writes success 0, and no records: nothing was kept."""
        path = tmp_path / "capstone.prom"
        command = ["run", "-i", broken_input(tmp_path), "--db", db, "--metrics-file", str(path)]
        assert runner.invoke(app, command).exit_code == 1
        found = parse(path.read_text(encoding="utf-8"))
        assert value_of(found, "capstone_run_success") == 0
        assert value_of(found, "capstone_run_id") == 1
        assert all(value_of(found, "capstone_run_records", fate=f) == 0 for f in FATES)

    def test_a_command_that_fails_before_its_run_writes_success_0(
        self, runner: CliRunner, db_path: str, tmp_path: Path
    ) -> None:
        """A missing input file is a failure too, without a run id."""
        path = tmp_path / "capstone.prom"
        result = runner.invoke(
            app,
            [
                "run",
                "-i",
                str(tmp_path / "nope.jsonl"),
                "--db",
                db_path,
                "--metrics-file",
                str(path),
            ],
        )
        assert result.exit_code == 1
        found = parse(path.read_text(encoding="utf-8"))
        assert value_of(found, "capstone_run_success") == 0
        assert not [name for name, _ in found if name == "capstone_run_id"]

    def test_replay_writes_its_counters(
        self, runner: CliRunner, db: str, sample: str, tmp_path: Path
    ) -> None:
        """A replay writes its own run's counters; the two letters it rejects again are counted
        as seen again, not as new."""
        path = tmp_path / "capstone.prom"
        assert runner.invoke(app, ["run", "-i", sample, "--db", db, "-q"]).exit_code == 0
        result = runner.invoke(app, ["replay", "--db", db, "-q", "--metrics-file", str(path)])
        assert result.exit_code == 0, result.output
        found = parse(path.read_text(encoding="utf-8"))
        assert value_of(found, "capstone_run_id") == 2
        assert value_of(found, "capstone_run_input_records") == 2
        assert value_of(found, "capstone_run_dead_letters") == 0
        assert value_of(found, "capstone_run_dead_letters_updated") == 2
        assert value_of(found, "capstone_run_success") == 1

    def test_an_unwritable_folder_is_refused_before_the_run(
        self, runner: CliRunner, db_path: str, sample: str, tmp_path: Path
    ) -> None:
        """A metrics file in a folder that does not exist is refused before anything loads."""
        path = tmp_path / "missing" / "capstone.prom"
        result = runner.invoke(
            app, ["run", "-i", sample, "--db", db_path, "--metrics-file", str(path)]
        )
        assert result.exit_code == 2
        assert "--metrics-file" in result.stderr
        assert not Path(db_path).exists()

    def test_a_folder_is_refused_before_anything_is_read_or_written(
        self, runner: CliRunner, db_path: str, sample: str, tmp_path: Path
    ) -> None:
        """--metrics-file with a folder (one run per file) is a usage error, exit 2, that
        loads nothing and writes no metrics file, even when the folder holds one file."""
        folder = tmp_path / "landing"
        folder.mkdir()
        (folder / "day-1.txt").write_bytes(Path(sample).read_bytes())
        path = tmp_path / "capstone.prom"
        result = runner.invoke(
            app, ["run", "-i", str(folder), "--db", db_path, "--metrics-file", str(path)]
        )
        assert result.exit_code == 2
        assert result.stderr == (
            "capstone: error: --metrics-file describes one run, and a folder, a glob or a "
            "repeated --input loads one run per file; give a single --input file, or run each "
            "file with its own metrics file\n"
        )
        assert not path.exists()
        assert not Path(db_path).exists()

    def test_the_same_file_for_metrics_and_output_is_refused(
        self, runner: CliRunner, db_path: str, sample: str, tmp_path: Path
    ) -> None:
        """--metrics-file and --output naming one file would write one over the other: a usage
        error, exit 2, before anything loads."""
        path = tmp_path / "run.out"
        result = runner.invoke(
            app,
            ["run", "-i", sample, "--db", db_path, "-o", str(path), "--metrics-file", str(path)],
        )
        assert result.exit_code == 2
        assert result.stderr == (
            f"capstone: error: --metrics-file and --output both name {path}; give each its own "
            "file\n"
        )
        assert not path.exists()
        assert not Path(db_path).exists()


class TestWrite:
    def test_a_failed_write_leaves_the_old_file_and_no_litter(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """When the rename fails the old file stays whole and the temporary file is removed."""
        path = tmp_path / "capstone.prom"
        path.write_text("old\n")

        def refuse(src: str, dst: str) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "replace", refuse)
        run = RunSummary(run_id=3, pipeline="events", status="success")
        with pytest.raises(CapstoneError, match="No space left on device"):
            write_metrics(path, "events", run)
        assert path.read_text() == "old\n"
        assert os.listdir(tmp_path) == ["capstone.prom"]

    def test_the_file_is_replaced_never_rewritten(self, tmp_path: Path) -> None:
        """Each write is a new file renamed over the old one: a reader sees one or the other."""
        path = tmp_path / "capstone.prom"
        write_metrics(path, "events", RunSummary(run_id=1, pipeline="events", status="success"))
        first = path.stat().st_ino
        write_metrics(path, "events", RunSummary(run_id=2, pipeline="events", status="failed"))
        assert path.stat().st_ino != first
        assert value_of(parse(path.read_text()), "capstone_run_id") == 2
        assert os.listdir(tmp_path) == ["capstone.prom"]

    def test_render_without_a_run(self) -> None:
        """Without a run: success 0, the given time, zero counts."""
        found = parse(render_metrics("events", None, now=1_700_000_000.0))
        assert value_of(found, "capstone_run_success") == 0
        assert value_of(found, "capstone_run_timestamp_seconds") == 1_700_000_000.0
        assert value_of(found, "capstone_run_records", fate="loaded") == 0
