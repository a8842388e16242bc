"""OpenLineage events of runs: the file transport, an HTTP receiver, failures that change nothing."""

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import capstone.pipeline
from capstone import openlineage
from capstone.cli import app
from capstone.errors import InputError, InterruptedRun
from capstone.store import open_store
from tests.conftest import ROOT, event, fetch
from tests.test_metrics import broken_input

REQUIRED = ("eventTime", "eventType", "producer", "schemaURL")
"""The RunEvent's required fields besides run.runId, job.namespace and job.name."""


@pytest.fixture(autouse=True)
def no_openlineage_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test starts with no OpenLineage settings, in a folder without openlineage.yml."""
    for name in list(os.environ):
        if name.startswith("OPENLINEAGE"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def events_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The file transport configured through OPENLINEAGE__ variables; the file events go to."""
    path = tmp_path / "events.jsonl"
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "file")
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__LOG_FILE_PATH", str(path))
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__APPEND", "true")
    return path


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def expected_output(db: str, table: str = "target") -> tuple[str, str]:
    """The target's dataset as the OpenLineage naming spec spells it on each backend."""
    if db.startswith("postgresql://"):
        with open_store(db) as store:
            info, schema = store.conn.info, store.conn.execute("SELECT current_schema()")
            name = f"{info.dbname}.{schema.fetchone()['current_schema']}.{table}"
            host = "localhost" if info.host.startswith("/") else info.host
            return f"postgres://{host}:{info.port}", name
    return f"sqlite:{os.path.abspath(db)}", table


def stored_uuid(db: str, run_id: int) -> str:
    [(value,)] = fetch(db, f"SELECT run_uuid FROM run_log WHERE run_id = {run_id}")
    return str(value)


class _Receiver(BaseHTTPRequestHandler):
    events: list[dict[str, Any]]
    status: int

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.events.append({"path": self.path, "event": json.loads(body)})
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]], type[_Receiver]]]:
    """An HTTP server on 127.0.0.1 that keeps what is POSTed: its URL, the requests, its handler."""

    class Receiver(_Receiver):
        events: list[dict[str, Any]] = []  # noqa: RUF012 (a class per test: its requests)
        status = 200

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", Receiver.events, Receiver
    finally:
        server.shutdown()
        server.server_close()


class TestNotConfigured:
    def test_nothing_configured_imports_nothing(self, tmp_path: Path) -> None:
        """Without settings a run sends nothing and never imports the OpenLineage client."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENLINEAGE")}
        env["HOME"] = str(tmp_path)
        script = (
            "import sys, capstone.pipeline as p\n"
            f"s = p.run({str(ROOT / 'data' / 'sample_input.txt')!r}, 'x.db')\n"
            "assert s.loaded == 5 and s.run_uuid\n"
            "print(sorted(m for m in sys.modules if m.startswith('openlineage')))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert done.stdout == "[]\n"
        assert done.stderr == ""

    def test_disabled_wins(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """OPENLINEAGE_DISABLED=true turns off what other settings configure."""
        monkeypatch.setenv("OPENLINEAGE_URL", "http://127.0.0.1:9")
        assert openlineage.configured() == "OPENLINEAGE_URL"
        monkeypatch.setenv("OPENLINEAGE_DISABLED", "true")
        assert openlineage.configured() is None

    def test_missing_client_is_one_warning(
        self,
        monkeypatch: pytest.MonkeyPatch,
        events_file: Path,
        db: str,
        sample: str,
        runner: CliRunner,
    ) -> None:
        """Configured without the extra installed: one line with the install hint, run as ever."""
        monkeypatch.setitem(sys.modules, "openlineage", None)
        monkeypatch.delitem(sys.modules, "capstone._openlineage_events", raising=False)
        result = runner.invoke(app, ["run", "-i", sample, "--db", db, "--json"])
        assert result.exit_code == 0, result.output
        assert result.stderr.splitlines() == [
            "capstone: warning: OpenLineage is configured (OPENLINEAGE__TRANSPORT__TYPE) but "
            "its client is not installed, so no events are sent; install it with: pip install "
            "'capstone[openlineage]'"
        ]
        assert json.loads(result.stdout)["loaded"] == 5
        assert not events_file.exists()


class TestFileTransport:
    def test_a_run_is_start_then_complete(
        self, events_file: Path, db: str, sample: str, runner: CliRunner
    ) -> None:
        """START then COMPLETE, with the run log's UUID, the file in, the target out, and facets."""
        result = runner.invoke(app, ["run", "-i", sample, "--db", db, "-q"])
        assert result.exit_code == 0, result.output
        assert result.stderr == ""
        start, complete = read_events(events_file)
        assert [start["eventType"], complete["eventType"]] == ["START", "COMPLETE"]
        run_uuid = stored_uuid(db, 1)
        assert start["run"]["runId"] == complete["run"]["runId"] == run_uuid
        shown = runner.invoke(app, ["runs", "1", "--db", db, "--json"])
        assert json.loads(shown.stdout)["run_uuid"] == run_uuid
        assert complete["job"]["namespace"] == "capstone"
        assert complete["job"]["name"] == "events"
        [source] = complete["inputs"]
        assert (source["namespace"], source["name"]) == ("file", sample)
        assert source["inputFacets"]["inputStatistics"]["size"] == os.path.getsize(sample)
        [target] = complete["outputs"]
        assert (target["namespace"], target["name"]) == expected_output(db)
        columns = [f["name"] for f in target["facets"]["schema"]["fields"]]
        assert columns == ["key", "name", "value", "ts", "attributes", "run_id"]
        assert target["outputFacets"]["outputStatistics"]["rowCount"] == 5
        assert target["facets"]["dataQualityMetrics"]["rowCount"] == 7
        rejects = target["facets"]["capstone_rejects"]
        assert rejects["rejected"] == 2
        assert sum(rejects["rejectsByReason"].values()) == 2
        assert complete["run"]["facets"]["capstone_run"]["runLogId"] == 1
        assert start["outputs"][0]["facets"]["schema"] == target["facets"]["schema"]

    def test_failed_run_is_fail_with_its_error(
        self, events_file: Path, db: str, tmp_path: Path
    ) -> None:
        """A run that fails sends FAIL with the error message facet, under the START's run id."""
        with pytest.raises(InputError) as failure:
            capstone.pipeline.run(broken_input(tmp_path), db)
        start, fail = read_events(events_file)
        assert [start["eventType"], fail["eventType"]] == ["START", "FAIL"]
        assert start["run"]["runId"] == fail["run"]["runId"] == stored_uuid(db, 1)
        assert fail["run"]["facets"]["errorMessage"]["message"] == str(failure.value)
        assert fail["run"]["facets"]["capstone_run"]["status"] == "failed"

    def test_interrupted_run_is_abort(self, events_file: Path, db: str, write_jsonl: Any) -> None:
        """A run interrupted before it commits sends ABORT."""
        path = write_jsonl([event(f"k{n}", "2025-01-15T12:00:00") for n in range(3)])
        calls = []

        def progress(records: int, read: int) -> None:
            calls.append(records)
            if len(calls) == 2:
                raise KeyboardInterrupt

        options = capstone.pipeline.RunOptions(batch_size=1)
        with pytest.raises(InterruptedRun):
            capstone.pipeline.run(path, db, options, progress)
        assert [e["eventType"] for e in read_events(events_file)] == ["START", "ABORT"]

    def test_replays_and_dismissals_are_runs(self, events_file: Path, db: str, sample: str) -> None:
        """A replay and a dismissal each send START and COMPLETE, reading the dead letters."""
        capstone.pipeline.run(sample, db)
        capstone.pipeline.replay(db)
        with open_store(db) as store:
            letter = store.dead_letters()[0].id
            capstone.pipeline.dismiss_dead_letters(store, capstone.pipeline.RunOptions(), [letter])
        sent = read_events(events_file)
        assert [e["eventType"] for e in sent] == ["START", "COMPLETE"] * 3
        assert len({e["run"]["runId"] for e in sent}) == 3
        dead_letters = expected_output(db, "dead_letters")
        for sent_event in sent[2:]:
            [source] = sent_event["inputs"]
            assert (source["namespace"], source["name"]) == dead_letters

    def test_config_file_and_namespace(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db: str, sample: str
    ) -> None:
        """An openlineage.yml in the working folder configures the client; the namespace is
        OPENLINEAGE_NAMESPACE's when set."""
        path = tmp_path / "from-yaml.jsonl"
        (tmp_path / "openlineage.yml").write_text(
            f"transport:\n  type: file\n  log_file_path: {path}\n  append: true\n"
        )
        monkeypatch.setenv("OPENLINEAGE_NAMESPACE", "loads")
        capstone.pipeline.run(sample, db)
        assert [e["job"]["namespace"] for e in read_events(path)] == ["loads", "loads"]


class TestHttp:
    def test_events_are_posted_with_the_required_fields(
        self,
        monkeypatch: pytest.MonkeyPatch,
        receiver: tuple[str, list[dict[str, Any]], Any],
        db: str,
        sample: str,
        runner: CliRunner,
    ) -> None:
        """OPENLINEAGE_URL sends each event as JSON to /api/v1/lineage, with every required field."""
        url, posted, _ = receiver
        monkeypatch.setenv("OPENLINEAGE_URL", url)
        result = runner.invoke(app, ["run", "-i", sample, "--db", db, "-q"])
        assert result.exit_code == 0, result.output
        assert result.stderr == ""
        assert [p["path"] for p in posted] == ["/api/v1/lineage"] * 2
        for sent in (p["event"] for p in posted):
            assert all(sent[name] for name in REQUIRED)
            assert sent["run"]["runId"] == stored_uuid(db, 1)
            assert (sent["job"]["namespace"], sent["job"]["name"]) == ("capstone", "events")
        assert [p["event"]["eventType"] for p in posted] == ["START", "COMPLETE"]
        # The client's aliases of OPENLINEAGE_URL stay out of the caller's environment.
        assert not [name for name in os.environ if name.startswith("OPENLINEAGE__")]

    @pytest.mark.parametrize("failure", ["500", "closed"])
    def test_a_failing_receiver_is_one_warning(
        self,
        monkeypatch: pytest.MonkeyPatch,
        receiver: tuple[str, list[dict[str, Any]], Any],
        failure: str,
        db: str,
        sample: str,
        runner: CliRunner,
    ) -> None:
        """A receiver that answers 500, or is not there, costs one warning line: exit 0, run kept."""
        url, posted, handler = receiver
        handler.status = 500
        if failure == "closed":
            url = "http://127.0.0.1:9"  # the discard port: nothing listens there
        monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "http")
        monkeypatch.setenv("OPENLINEAGE__TRANSPORT__URL", url)
        monkeypatch.setenv("OPENLINEAGE__TRANSPORT__RETRY", '{"total": 0}')
        result = runner.invoke(app, ["run", "-i", sample, "--db", db, "--json"])
        assert result.exit_code == 0, result.output
        [warning] = result.stderr.splitlines()
        assert warning.startswith("capstone: warning: an OpenLineage event could not be sent (")
        assert warning.endswith("); the run is unaffected")
        assert json.loads(result.stdout)["loaded"] == 5
        assert fetch(db, "SELECT status, loaded FROM run_log") == [("success", 5)]
        assert len(posted) == (2 if failure == "500" else 0)
