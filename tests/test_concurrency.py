"""Concurrent runs: one run per pipeline at a time on both backends, other pipelines in parallel
on PostgreSQL; the loser waits up to --lock-timeout and names the run it waited for."""

import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from capstone import RunOptions, run
from capstone.errors import LockError, WatermarkError
from capstone.fates import Merged
from capstone.pipeline import run_source
from capstone.sources import SourceFile
from capstone.spec import EVENTS, PipelineSpec
from capstone.store import open_store
from capstone.store.postgres import PostgresStore
from capstone.summary import RunStatus
from capstone.timeutil import parse_ts, to_micros
from tests.conftest import fetch
from tests.pg import drop_schema, fresh_schema_url

KEYS = 20_000
BASE = datetime(2025, 2, 1)


def events_file(path: Path, count: int, *, offset: int = 0, every: int = 1) -> str:
    """JSON Lines of `count` valid records over KEYS keys, ts rising by `every` seconds."""
    with path.open("w") as fh:
        for i in range(count):
            ts = (BASE + timedelta(seconds=offset + i * every)).isoformat()
            fh.write(f'{{"key": "k{i % KEYS}", "name": "n", "value": {i}, "ts": "{ts}"}}\n')
    return str(path)


def start(input_path: str, db: str, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "capstone",
            "run",
            "--input",
            input_path,
            "--db",
            db,
            "--json",
            *options,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=300)
    return process.returncode, stdout, stderr


def hold_lock(db: str, pipeline: str = "events") -> tuple[Any, Any, int]:
    """Open a run of `pipeline` and enter its transaction; returns (store, context, run id)."""
    store = open_store(db)
    begun = store.begin_run(pipeline, "holder")
    context = store.run_transaction(begun, 1.0, EVENTS)
    context.__enter__()
    return store, context, begun.run_id


class TestOnePipelineAtATime:
    def test_second_run_waits_then_names_the_holder(self, db: str, sample: str) -> None:
        """While a run holds the pipeline, another fails after --lock-timeout, naming that run."""
        open_store(db).close()
        store, context, holder = hold_lock(db)
        try:
            started = time.monotonic()
            with pytest.raises(LockError) as caught:
                run(sample, db, RunOptions(lock_timeout=0.3))
            waited = time.monotonic() - started
        finally:
            context.__exit__(None, None, None)
            store.close()
        assert str(caught.value) == (
            f"another run of pipeline 'events' is in progress (run {holder}); "
            "wait for it to finish or raise --lock-timeout"
        )
        assert waited >= 0.3

    def test_lock_is_released_when_a_run_fails(self, db: str, sample: str) -> None:
        """A failed run gives the pipeline back at once, though its store stays open."""
        failing = open_store(db)
        try:
            failing.set_watermark("events", "garbage")
            with SourceFile(sample) as source, pytest.raises(WatermarkError):
                run_source(source, failing, RunOptions())
            failing.set_watermark("events", None)
            assert run(sample, db, RunOptions(lock_timeout=0)).status == "success"
        finally:
            failing.close()

    @pytest.mark.postgres
    def test_other_pipelines_do_not_wait_on_postgres(self, pg_db: str, sample: str) -> None:
        """On PostgreSQL a run of another pipeline proceeds while one pipeline is held."""
        open_store(pg_db).close()
        store, context, _ = hold_lock(pg_db)
        try:
            summary = run(
                sample, pg_db, RunOptions(lock_timeout=0), spec=PipelineSpec(name="other")
            )
        finally:
            context.__exit__(None, None, None)
            store.close()
        assert (summary.status, summary.loaded) == ("success", 5)

    @pytest.mark.postgres
    def test_same_pipeline_in_another_schema_does_not_wait(
        self, pg_db: str, pg_server: str, sample: str
    ) -> None:
        """Locks belong to a schema: pipeline 'events' of another schema on the server is free."""
        other = fresh_schema_url(pg_server, f"t_{uuid.uuid4().hex[:12]}")
        store, context, _ = hold_lock(pg_db)
        try:
            summary = run(sample, other, RunOptions(lock_timeout=0))
        finally:
            context.__exit__(None, None, None)
            store.close()
            drop_schema(other)
        assert summary.status == "success"


@pytest.mark.slow
def test_two_processes_of_one_pipeline_exactly_one_wins(db: str, tmp_path: Path) -> None:
    """Two runs started at once: one loads everything, the other exits 1 naming it; nothing doubles."""
    open_store(db).close()
    path = events_file(tmp_path / "events.jsonl", 150_000)
    processes = [start(path, db, "--lock-timeout", "0.5") for _ in range(2)]
    results = [finish(process) for process in processes]
    assert sorted(code for code, _, _ in results) == [0, 1], results
    [(_, stdout, _)] = [result for result in results if result[0] == 0]
    [(_, _, stderr)] = [result for result in results if result[0] == 1]
    winner = json.loads(stdout)
    assert stderr == (
        f"capstone: error: another run of pipeline 'events' is in progress "
        f"(run {winner['run_id']}); wait for it to finish or raise --lock-timeout\n"
    )
    assert (winner["loaded"], winner["stale"]) == (150_000, 0)
    assert fetch(db, "SELECT COUNT(*), SUM(value) FROM target") == [
        (KEYS, sum(range(150_000 - KEYS, 150_000)))
    ]
    assert fetch(db, "SELECT COUNT(*) FROM lineage") == [(winner["lineage_entries"],)]
    runs = fetch(db, "SELECT run_id, status, error FROM run_log ORDER BY run_id")
    assert [row for row in runs if row[1] == "success"] == [(winner["run_id"], "success", None)]
    # The loser has a failed row, except on SQLite when it could not even log its start.
    assert [status for _, status, _ in runs if status != "success"] in (["failed"], [])


@pytest.mark.slow
@pytest.mark.postgres
def test_two_pipelines_run_in_parallel_on_postgres(pg_db: str, tmp_path: Path) -> None:
    """Two pipelines of one database load at the same time, each into its own table."""
    open_store(pg_db).close()
    count = 150_000
    even = events_file(tmp_path / "even.jsonl", count, every=2)
    odd = events_file(tmp_path / "odd.jsonl", count, offset=1, every=2)
    config = tmp_path / "capstone.toml"
    config.write_text("[pipelines.even]\n[pipelines.odd]\n")
    processes = [
        start(path, pg_db, "--pipeline", name, "--lock-timeout", "0", "--config", str(config))
        for path, name in ((even, "even"), (odd, "odd"))
    ]
    results = [finish(process) for process in processes]
    assert [code for code, _, _ in results] == [0, 0], results
    summaries = {json.loads(stdout)["pipeline"]: json.loads(stdout) for _, stdout, _ in results}
    [(first_end, last_start)] = fetch(
        pg_db, "SELECT MIN(finished_at), MAX(started_at) FROM run_log WHERE status = 'success'"
    )
    assert last_start < first_end, "the two runs did not overlap"
    for name in ("even", "odd"):
        [(rows, run_ids)] = fetch(pg_db, f"SELECT COUNT(*), COUNT(DISTINCT run_id) FROM {name}")
        assert (rows, run_ids) == (KEYS, 1)
        assert (summaries[name]["loaded"], summaries[name]["stale"]) == (count, 0)
    total = sum(s["lineage_entries"] for s in summaries.values())
    assert fetch(pg_db, "SELECT COUNT(*) FROM lineage") == [(total,)]


@pytest.mark.postgres
def test_newer_row_committed_during_a_merge_makes_its_records_stale(pg_db: str) -> None:
    """A merge that meets a newer row another pipeline committed meanwhile counts its record stale."""
    newer, older = (
        (1, 1, "k", "n", value, ts, None, to_micros(parse_ts(ts)))
        for value, ts in ((2.0, "2025-01-02T00:00:00"), (1.0, "2025-01-01T00:00:00"))
    )
    # The events table exists before the race: creating it is not what this test is about.
    creator = PostgresStore(pg_db)
    try:
        begun = creator.begin_run("events", "setup")
        with creator.run_transaction(begun, 0, EVENTS) as tx:
            tx.finish(begun.model_copy(update={"status": RunStatus.SUCCESS}), {})
    finally:
        creator.close()
    first, second = PostgresStore(pg_db), PostgresStore(pg_db)
    waiting = f"SELECT 1 FROM pg_stat_activity WHERE pid = {second.backend_pid} AND wait_event_type = 'Lock'"
    try:
        run_a = first.begin_run("a", "test")
        run_b = second.begin_run("b", "test")
        with (
            second.run_transaction(run_b, 0, EVENTS) as tx_b,
            first.run_transaction(run_a, 0, EVENTS) as tx_a,
        ):
            tx_a.stage([newer])
            assert tx_a.merge(None, None) == Merged(loaded=1, stale=0, skipped=0, late=0)
            tx_b.stage([older])
            merged: list[Merged] = []
            merging = threading.Thread(target=lambda: merged.append(tx_b.merge(None, None)))
            merging.start()  # plans against an empty target, then waits on a's row for key k
            deadline = time.monotonic() + 30
            while not fetch(pg_db, waiting):
                assert time.monotonic() < deadline, "the second merge never waited"
                time.sleep(0.02)
            tx_a.finish(
                run_a.model_copy(update={"status": RunStatus.SUCCESS, "staged": 1, "loaded": 1}), {}
            )
            merging.join(30)
            tx_b.finish(
                run_b.model_copy(update={"status": RunStatus.SUCCESS, "staged": 1, "stale": 1}), {}
            )
    finally:
        first.close()
        second.close()
    assert merged == [Merged(loaded=0, stale=1, skipped=0, late=0)]
    assert fetch(pg_db, "SELECT value FROM target") == [(2.0,)]
    assert fetch(
        pg_db, f"SELECT detail FROM lineage WHERE run_id = {run_b.run_id} AND step = 'stale'"
    ) == [("kept ts 2025-01-02T00:00:00 over 2025-01-01T00:00:00",)]


def test_a_run_on_sqlite_does_not_log_its_start_while_another_live_run_is_logged(
    db_path: str, sample: str
) -> None:
    """SQLite: a live `running` row (another process, between its start and its transaction)
    keeps a second run from logging a start it could not later mark failed."""
    open_store(db_path).close()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with open_store(db_path) as store:
            store.conn.execute(
                "INSERT INTO run_log (pipeline, status, source, started_at, host, pid) "
                "VALUES ('events', 'running', 'x', '2025-01-01T00:00:00', :host, :pid)",
                {"host": socket.gethostname(), "pid": sleeper.pid},
            )
            store.conn.commit()
        started = time.monotonic()
        with pytest.raises(
            LockError, match=r"another run of pipeline 'events' is in progress \(run 1\)"
        ):
            run(sample, db_path, RunOptions(lock_timeout=0.3))
        assert time.monotonic() - started >= 0.3
        assert fetch(db_path, "SELECT run_id, status FROM run_log") == [(1, "running")]
    finally:
        sleeper.kill()
        sleeper.wait()
    assert run(sample, db_path, RunOptions(lock_timeout=0.3)).status == "success"
    assert fetch(db_path, "SELECT status FROM run_log ORDER BY run_id") == [
        ("abandoned",),
        ("success",),
    ]
