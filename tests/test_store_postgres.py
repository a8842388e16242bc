"""What only the PostgreSQL backend has: NUL handling, URL redaction, migrations, typed columns,
driver and server errors, abandoned-run marking through advisory locks."""

import random
import string
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import psycopg
import pytest

from capstone import RunOptions, run
from capstone.config import load_config
from capstone.errors import LockError, StoreError
from capstone.fates import Merged
from capstone.pipeline import replay_dead_letters
from capstone.spec import EVENTS, FieldSpec, PipelineSpec
from capstone.store import open_store
from capstone.store.postgres import (
    MAX_KEY_BYTES,
    SCHEMA_VERSION,
    PostgresStore,
    redact_url,
    screen_for,
)
from capstone.summary import RunStatus
from capstone.timeutil import parse_ts, to_micros
from tests.conftest import event, fetch
from tests.pg import execute, with_password

NUL_KEY = event("a\x00b", "2025-01-01T00:00:00")


def password_of(url: str) -> str:
    return urlsplit(url).password or ""


unstorable = screen_for(EVENTS)


class TestUnstorable:
    def test_clean_record_has_no_reason(self) -> None:
        """A record without NUL characters can be stored."""
        assert unstorable((1, 1, "k", "n", 1.0, "2025-01-01T00:00:00", '{"a": "\\\\u0000"}')) == []

    def test_each_field_with_a_nul_gets_a_reason(self) -> None:
        """key, name and every extra field holding a NUL get their own nul_character reason."""
        row = (1, 1, "a\x00", "\x00", 1.0, "2025-01-01T00:00:00", '{"ok":1,"tag":["\\u0000"]}')
        assert [code for code, _ in unstorable(row)] == [
            "key.nul_character",
            "name.nul_character",
            "tag.nul_character",
        ]

    def test_a_key_too_long_for_an_index_gets_a_reason(self) -> None:
        """A key of more UTF-8 bytes than an index entry holds is refused; characters count by
        their bytes, and all string parts of a composite key count together."""
        spec = PipelineSpec.model_validate(
            {
                "name": "orders",
                "key": ["region", "id"],
                "event_time": "ts",
                "fields": {
                    "region": {"type": "string"},
                    "id": {"type": "string"},
                    "ts": {"type": "timestamp"},
                },
            }
        )
        screen = screen_for(spec)

        def row(region: str, id_: str) -> tuple[Any, ...]:
            lineage_key = orjson.dumps([region, id_]).decode()
            return (1, 1, region, id_, "2025-01-01T00:00:00", None, lineage_key)

        part = (MAX_KEY_BYTES - 7) // 2  # ["...","..."] adds 7 bytes
        assert screen(row("r" * part, "i" * part)) == []
        # Each control character takes six bytes as JSON: the index entry, not the text, counts.
        assert [code for code, _ in screen(row("r" * part, "\x01" * (part // 6 + 1)))] == [
            "region.key_too_long"
        ]
        assert [code for code, _ in screen(row("r" * part, "é" * (part // 2 + 1)))] == [
            "region.key_too_long"
        ]


class TestRedaction:
    def test_password_in_the_user_part_is_hidden(self) -> None:
        """user:password@ shows as user:***@."""
        assert redact_url("postgresql://me:s3cr%40t@db:5432/x") == "postgresql://me:***@db:5432/x"

    def test_password_parameter_is_hidden(self) -> None:
        """A password= query parameter shows as password=***; other parameters stay."""
        shown = redact_url("postgresql://me@db/x?sslmode=require&password=s3cret")
        assert shown == "postgresql://me@db/x?sslmode=require&password=***"

    def test_url_that_does_not_parse_still_hides_the_password(self) -> None:
        """A malformed URL is shown as written, except for its password."""
        shown = redact_url("postgresql://me:hunter2@[::1/x?sslmode=require")
        assert shown == "postgresql://me:***@[::1/x?sslmode=require"

    def test_url_without_password_is_unchanged(self) -> None:
        """Nothing to hide, nothing changed."""
        assert redact_url("postgresql://me@db/x") == "postgresql://me@db/x"


class TestConnectionErrors:
    def test_server_down_names_how_to_start_it(self) -> None:
        """No server listening: one line saying how to start one, without the password."""
        with pytest.raises(StoreError) as caught:
            open_store("postgresql://me:hunter2-secret@127.0.0.1:1/capstone")
        message = str(caught.value)
        assert "no server is listening" in message
        assert "pg_ctlcluster" in message
        assert "hunter2-secret" not in message
        assert "\n" not in message

    def test_invalid_url_says_what_form_to_use(self) -> None:
        """A URL libpq cannot parse gives the expected form, without the password."""
        with pytest.raises(StoreError, match="postgresql://user:password@host") as caught:
            open_store("postgresql://me:hunter2-secret@db/x?no_such_option=1")
        assert "hunter2-secret" not in str(caught.value)

    def test_malformed_url_is_refused_without_the_password(self) -> None:
        """A URL that does not parse at all is refused in one line, the password hidden."""
        with pytest.raises(StoreError, match="not a valid PostgreSQL URL") as caught:
            open_store("postgresql://me:hunter2-secret@[::1/x")
        assert "hunter2-secret" not in str(caught.value)

    def test_missing_driver_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without psycopg, a postgresql:// URL fails with a line naming capstone[postgres]."""
        for name in [m for m in sys.modules if m.startswith("capstone.store.postgres")]:
            monkeypatch.delitem(sys.modules, name)
        monkeypatch.setitem(sys.modules, "psycopg", None)
        with pytest.raises(StoreError, match=r"pip install 'capstone\[postgres\]'"):
            open_store("postgresql://me@127.0.0.1:1/capstone")


@pytest.mark.postgres
class TestWithServer:
    def test_wrong_password_is_refused_without_showing_it(self, pg_db: str) -> None:
        """A wrong password: one line naming the user, the password itself never shown."""
        with pytest.raises(StoreError, match="refused the password") as caught:
            open_store(with_password(pg_db, "hunter2-secret"))
        assert "hunter2-secret" not in str(caught.value)

    def test_unknown_database_names_createdb(self, pg_db: str) -> None:
        """A database that does not exist: the message says how to create it."""
        url = urlsplit(pg_db)._replace(path="/no_such_capstone_db").geturl()
        with pytest.raises(StoreError, match="createdb no_such_capstone_db"):
            open_store(url)

    def test_display_url_hides_the_password(self, pg_db: str) -> None:
        """The store's display URL never carries the password."""
        store = open_store(pg_db)
        try:
            assert f":{password_of(pg_db)}@" not in store.display_url
            assert ":***@" in store.display_url
        finally:
            store.close()

    def test_store_errors_in_the_run_log_hide_the_password(
        self, pg_db: str, write_jsonl: Any
    ) -> None:
        """A database error mid-run is logged with the redacted URL, never the password."""
        open_store(pg_db).close()
        execute(pg_db, "ALTER TABLE target ADD CONSTRAINT no_writes CHECK (value < 0)")
        with pytest.raises(StoreError, match="no_writes"):
            run(write_jsonl([event("a", "2025-01-01T00:00:00")]), pg_db)
        [(error,)] = fetch(pg_db, "SELECT error FROM run_log WHERE status = 'failed'")
        assert ":***@" in error
        assert f":{password_of(pg_db)}@" not in error

    def test_migrations_are_recorded_once(self, pg_db: str) -> None:
        """Opening twice applies each migration once and records it in schema_migrations."""
        open_store(pg_db).close()
        open_store(pg_db).close()
        versions = fetch(pg_db, "SELECT version FROM schema_migrations ORDER BY version")
        assert versions == [(number,) for number in range(1, SCHEMA_VERSION + 1)]

    def test_newer_schema_is_refused(self, pg_db: str) -> None:
        """A schema written by a newer capstone is refused with an upgrade hint."""
        open_store(pg_db).close()
        execute(pg_db, "INSERT INTO schema_migrations VALUES (999, 'future', now())")
        with pytest.raises(StoreError, match="newer capstone"):
            open_store(pg_db)

    def test_report_commands_do_not_create_tables(self, pg_db: str) -> None:
        """Opening without create on an empty schema says there is nothing yet, creates nothing."""
        with pytest.raises(StoreError, match="no capstone tables"):
            open_store(pg_db, create=False)
        assert fetch(pg_db, "SELECT to_regclass('run_log')") == [(None,)]

    def test_columns_are_typed(self, pg_db: str) -> None:
        """ts is a timestamp, value double precision, attributes and parsed letters jsonb."""
        open_store(pg_db).close()
        types = {
            f"{table}.{column}": kind
            for table, column, kind in fetch(
                pg_db,
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = current_schema()",
            )
        }
        assert types["target.ts"] == "timestamp without time zone"
        assert types["target.value"] == "double precision"
        assert types["target.attributes"] == "jsonb"
        assert types["dead_letters.record"] == "jsonb"
        assert types["dead_letters.raw"] == "text"

    def test_timestamps_come_back_as_canonical_text(self, pg_db: str, write_jsonl: Any) -> None:
        """Watermark, run log and lineage show ts exactly as SQLite does, microseconds included."""
        path = write_jsonl([event("a", "2025-01-15T12:00:00.250000"), event("a", "2025-01-15")])
        summary = run(path, pg_db)
        assert summary.watermark == "2025-01-15T12:00:00.250000"
        store = open_store(pg_db)
        try:
            [logged] = store.runs()
            details = [entry.detail for entry in store.lineage("a") if entry.step != "stage"]
        finally:
            store.close()
        assert logged.watermark == "2025-01-15T12:00:00.250000"
        assert details == [
            "ts 2025-01-15T12:00:00.250000",
            "kept ts 2025-01-15T12:00:00.250000 over 2025-01-15T00:00:00",
        ]

    def test_lineage_is_the_same_as_on_sqlite(
        self, pg_db: str, db_path: str, sample: str, write_jsonl: Any
    ) -> None:
        """The same inputs give the same lineage rows, step by step, on both backends."""
        late = write_jsonl([event("evt-003", "2025-01-15T11:00:00"), event("z", "2025-01-16")])
        for db in (db_path, pg_db):
            run(sample, db)
            run(late, db, RunOptions(lookback=timedelta(days=1)))
        query = (
            "SELECT run_id, step, key, position, detail FROM lineage ORDER BY run_id, position, id"
        )
        assert fetch(pg_db, query) == fetch(db_path, query)

    def test_the_merge_writes_target_and_lineage_in_key_order(
        self, pg_db: str, write_jsonl: Any
    ) -> None:
        """The merge inserts without sorting again, reading its plan in the order its windows
        left it: new target rows and lineage rows come out in key order (then input order), as
        the deadlock rule and the lineage index's sequential inserts need."""
        keys = [f"k{n:03}" for n in random.Random(7).sample(range(200), 200)]
        records = [event(key, f"2025-01-{1 + n % 9:02}") for n, key in enumerate(keys * 2)]
        run(write_jsonl(records), pg_db)
        target_order = [key for (key,) in fetch(pg_db, "SELECT key FROM target ORDER BY ctid")]
        lineage_order = fetch(
            pg_db, "SELECT key, position FROM lineage_records WHERE run_id = 1 ORDER BY id"
        )
        assert target_order == sorted(keys)
        assert lineage_order == sorted(lineage_order)
        assert len(lineage_order) == 400


def long_key_pipeline(tmp_path: Path) -> PipelineSpec:
    """A pipeline whose string key `id` has no length limit."""
    config = tmp_path / "capstone.toml"
    config.write_text(
        '[pipelines.long]\nkey = "id"\nevent_time = "at"\n[pipelines.long.fields]\n'
        'id = { type = "string" }\nat = { type = "timestamp" }\n'
    )
    return load_config(config).pipeline("long")


def incompressible(length: int) -> str:
    """Random letters: PostgreSQL compresses an index entry, and "x" * 3000 would fit."""
    return "".join(random.Random(length).choices(string.ascii_letters, k=length))


@pytest.mark.postgres
class TestNulCharacters:
    def test_valid_record_with_a_nul_is_dead_lettered(self, pg_db: str, write_jsonl: Any) -> None:
        """A NUL in a valid record's key rejects that record with key.nul_character; the run goes on."""
        summary = run(write_jsonl([NUL_KEY, event("ok", "2025-01-01T00:00:00")]), pg_db)
        assert (summary.staged, summary.rejected, summary.dead_letters) == (1, 1, 1)
        [(key, reason, message)] = fetch(pg_db, "SELECT key, reason, message FROM dead_letters")
        assert (key, reason) == ("a\\x00b", "key.nul_character")
        assert "PostgreSQL cannot store" in message
        assert fetch(pg_db, "SELECT key FROM target") == [("ok",)]

    def test_a_key_too_long_to_index_is_dead_lettered(
        self, pg_db: str, tmp_path: Path, write_jsonl: Any
    ) -> None:
        """A config pipeline's string key has no length limit; one beyond what a PostgreSQL index
        holds rejects its record (key_too_long) instead of failing the whole run."""
        spec = long_key_pipeline(tmp_path)
        long_key = incompressible(3000)
        records = [{"id": long_key, "at": "2025-01-01T00:00:00"}, {"id": "a", "at": "2025-01-01"}]
        summary = run(write_jsonl(records), pg_db, spec=spec)
        assert (summary.staged, summary.rejected) == (1, 1)
        [(reason, key)] = fetch(pg_db, "SELECT reason, key FROM dead_letters")
        assert (reason, key) == ("id.key_too_long", long_key[:256])

    def test_a_letter_whose_record_held_a_nul_replays_onto_itself(
        self, pg_db: str, tmp_path: Path
    ) -> None:
        """Its stored text has the NUL escaped, so it no longer matches its fingerprint: the
        replay refreshes the letter by id instead of adding a second one each time."""
        path = tmp_path / "nul.csv"
        path.write_text("key,name,value,ts\nab\x00c,n,1,2025-01-01T00:00:00\n")
        run(str(path), pg_db)
        for _ in range(2):
            store = open_store(pg_db)
            try:
                summary = replay_dead_letters(store, RunOptions())
            finally:
                store.close()
            assert (summary.rejected, summary.dead_letters) == (1, 0)
        [(times_seen, reason)] = fetch(pg_db, "SELECT times_seen, reason FROM dead_letters")
        assert (times_seen, reason) == (3, "key.nul_character")

    def test_a_long_key_skipped_or_in_the_future_does_not_fail_the_run(
        self, pg_db: str, tmp_path: Path, write_jsonl: Any
    ) -> None:
        """Records never staged (a late one the screen refuses for its key, one rejected for a
        future ts) write lineage under the key cut to 256 characters, which any index holds."""
        spec = long_key_pipeline(tmp_path)
        long_key = incompressible(3500)
        run(write_jsonl([{"id": "a", "at": "2025-01-02T00:00:00"}]), pg_db, spec=spec)
        records = [
            {"id": long_key, "at": "2025-01-01T00:00:00"},
            {"id": long_key, "at": "2999-01-01"},
        ]
        summary = run(write_jsonl(records), pg_db, spec=spec)
        assert (summary.skipped, summary.rejected) == (0, 2)
        keys = fetch(pg_db, "SELECT DISTINCT key FROM lineage WHERE step IN ('skip', 'reject')")
        assert keys == [(long_key[:256],)]

    def test_nul_bytes_in_raw_text_are_escaped_and_kept(self, pg_db: str, tmp_path: Path) -> None:
        """A malformed line with NUL bytes is dead-lettered with each NUL written as \\x00."""
        path = tmp_path / "nul.jsonl"
        path.write_bytes(b'{"key": "a\x00b"\n')
        first = run(str(path), pg_db)
        second = run(str(path), pg_db)
        [(raw,)] = fetch(pg_db, "SELECT raw FROM dead_letters")
        assert raw == '{"key": "a\\x00b"'
        assert (first.dead_letters, second.dead_letters) == (1, 0)

    def test_rejected_record_with_a_nul_keeps_its_raw_text_for_replay(
        self, pg_db: str, write_jsonl: Any
    ) -> None:
        """An invalid record holding a NUL is stored without its parsed copy; a replay reads raw."""
        line = '{"key": "a", "name": "n", "value": "x\\u0000", "ts": "2025-01-01T00:00:00"}'
        run(write_jsonl([line]), pg_db)
        store = open_store(pg_db)
        try:
            [letter] = store.dead_letters()
            replayed = replay_dead_letters(store, RunOptions())
        finally:
            store.close()
        assert (letter.raw, letter.record) == (line, None)
        assert (replayed.input_records, replayed.rejected) == (1, 1)

    def test_nul_reaching_staging_fails_the_run_cleanly(self, pg_db: str, sample: str) -> None:
        """A record that skipped the NUL check fails the run with its position, keeping nothing."""
        store = PostgresStore(pg_db)
        try:
            begun = store.begin_run("events", "direct")
            with (
                pytest.raises(StoreError, match=r"position 7 .*NUL"),
                store.run_transaction(begun, 1.0, EVENTS) as tx,
            ):
                tx.stage([(1, 7, "a\x00b", "n", 1.0, "2025-01-01T00:00:00", None)])
        finally:
            store.close()
        assert fetch(pg_db, "SELECT COUNT(*) FROM target") == [(0,)]


@pytest.mark.postgres
class TestAbandonedRuns:
    def test_run_of_a_closed_session_is_marked_abandoned(self, pg_db: str) -> None:
        """A running row whose session ended is marked abandoned by the next open."""
        store = open_store(pg_db)
        begun = store.begin_run("events", "gone")
        store.close()  # the session ends as if its process had been killed
        store = open_store(pg_db)
        try:
            marked = store.get_run(begun.run_id)
        finally:
            store.close()
        assert marked is not None
        assert marked.status == "abandoned"

    def test_run_of_a_live_session_is_not_marked(self, pg_db: str) -> None:
        """A running row whose session is alive, even one waiting for its lock, stays running."""
        live = open_store(pg_db)
        try:
            begun = live.begin_run("events", "alive")
            other = open_store(pg_db)
            status = other.get_run(begun.run_id)
            other.close()
        finally:
            live.close()
        assert status is not None
        assert status.status == "running"


@pytest.mark.slow
@pytest.mark.postgres
def test_killed_run_keeps_nothing_and_frees_the_pipeline(
    pg_db: str, sample: str, tmp_path: Path
) -> None:
    """kill -9 mid-run: nothing of it is kept, its run is marked abandoned, the pipeline is free."""
    run(sample, pg_db)
    state = "SELECT (SELECT COUNT(*) FROM target), (SELECT COUNT(*) FROM lineage)"
    before = fetch(pg_db, state)
    path = tmp_path / "big.jsonl"
    path.write_text(
        "".join(
            f'{{"key": "k{i}", "name": "n", "value": {i}, "ts": "2025-02-01T00:00:00"}}\n'
            for i in range(300_000)
        )
    )
    command = [sys.executable, "-m", "capstone", "run", "--input", str(path), "--db", pg_db, "-q"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not fetch(pg_db, "SELECT 1 FROM run_log WHERE status = 'running'"):
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.02)
    time.sleep(0.5)  # well into staging
    process.kill()
    process.communicate()
    statuses: list[str] = []
    while statuses != ["abandoned", "success"]:  # the server ends the session within moments
        assert time.monotonic() < deadline, statuses
        store = open_store(pg_db)
        statuses = [r.status for r in store.runs()]
        store.close()
    assert fetch(pg_db, state) == before
    assert run(sample, pg_db, RunOptions(lock_timeout=0)).status == "success"


def spec_of(target: str, key: tuple[str, ...], fields: dict[str, str], **more: Any) -> PipelineSpec:
    """A pipeline whose fields are all required unless named in `optional`."""
    optional = more.pop("optional", ())
    return PipelineSpec(
        name=more.pop("name", target),
        target=target,
        key=key,
        event_time="at",
        fields={
            name: FieldSpec(type=kind, required=name not in optional)
            for name, kind in fields.items()
        },
        **more,
    )


LINES = spec_of(
    "lines", ("order", "line"), {"order": "string", "line": "integer", "at": "timestamp"}
)


class TestScreen:
    def test_every_kind_of_unstorable_value_is_named(self) -> None:
        """NUL in a string, a JSON field or an extra field gets a reason naming the field."""
        spec = spec_of(
            "t",
            ("id",),
            {"id": "integer", "label": "string", "doc": "json", "at": "timestamp"},
        )
        row = (1, 1, 2**63, "a\x00", '{"k":"\\u0000"}', "2025-01-01T00:00:00", '{"x":"\\u0000"}')
        assert [code for code, _ in screen_for(spec)(row)] == [
            "label.nul_character",
            "doc.nul_character",
            "x.nul_character",
        ]

    def test_storable_values_pass(self) -> None:
        """The 64-bit limits, an escaped backslash before u0000, and missing values are storable."""
        spec = spec_of(
            "t",
            ("id",),
            {"id": "integer", "label": "string", "doc": "json", "at": "timestamp"},
            optional=("label", "doc"),
        )
        screen = screen_for(spec)
        assert screen((1, 1, -(2**63), None, None, "2025-01-01T00:00:00", None)) == []
        assert screen((1, 1, 2**63 - 1, "ok", '"\\\\u0000"', "2025-01-01T00:00:00", None)) == []


@pytest.mark.postgres
class TestPipelineTables:
    def test_every_field_type_gets_its_column_type(self, pg_db: str, write_jsonl: Any) -> None:
        """A new target has typed columns; key and event time are NOT NULL, the rest nullable."""
        spec = spec_of(
            "typed",
            ("id",),
            {
                "id": "integer",
                "s": "string",
                "f": "float",
                "b": "boolean",
                "at": "timestamp",
                "other": "timestamp",
                "j": "json",
            },
            optional=("s", "f", "b", "other", "j"),
        )
        run(write_jsonl([{"id": 1, "at": "2025-01-01T00:00:00"}]), pg_db, spec=spec)
        columns = fetch(
            pg_db,
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = 'typed' "
            "ORDER BY ordinal_position",
        )
        assert columns == [
            ("id", "bigint", "NO"),
            ("s", "text", "YES"),
            ("f", "double precision", "YES"),
            ("b", "boolean", "YES"),
            ("at", "timestamp without time zone", "NO"),
            ("other", "timestamp without time zone", "YES"),
            ("j", "jsonb", "YES"),
            ("attributes", "jsonb", "YES"),
            ("run_id", "bigint", "NO"),
        ]

    def test_field_and_table_names_never_clash_with_the_merge(
        self, pg_db: str, db_path: str, write_jsonl: Any
    ) -> None:
        """Fields named like the merge plan's columns, into a table named merge_plan, merge as on
        SQLite: same rows, same lineage."""
        fields = ("applied", "winner", "ts", "ts_text", "newest_before", "c0", "lineage_key")
        spec = spec_of(
            "merge_plan",
            ("c0", "applied"),
            dict.fromkeys(fields, "string") | {"at": "timestamp"},
        )
        records = [
            dict.fromkeys(fields, "x") | {"c0": c0, "at": at}
            for c0, at in (("a", "2025-01-02"), ("a", "2025-01-01"), ("b", "2025-01-01"))
        ]
        path = write_jsonl(records)
        for db in (db_path, pg_db):
            assert (run(path, db, spec=spec).loaded, run(path, db, spec=spec).staged) == (2, 0)
        rows = "SELECT c0, applied, at, run_id FROM merge_plan ORDER BY c0"
        assert [(c0, a, str(at)[:10], r) for c0, a, at, r in fetch(pg_db, rows)] == [
            ("a", "x", "2025-01-02", 1),
            ("b", "x", "2025-01-01", 1),
        ]
        lineage = (
            "SELECT run_id, step, key, position, detail FROM lineage ORDER BY run_id, position, id"
        )
        assert fetch(pg_db, lineage) == fetch(db_path, lineage)

    def test_a_newer_row_committed_mid_merge_makes_the_composite_key_stale(
        self, pg_db: str, write_jsonl: Any
    ) -> None:
        """A row another session commits for the same (order, line) while the merge waits wins;
        the staged record is counted stale against it."""
        run(write_jsonl([{"order": "O-0", "line": 1, "at": "2025-01-01"}]), pg_db, spec=LINES)
        store = PostgresStore(pg_db)
        other = psycopg.connect(pg_db)
        try:
            begun = store.begin_run("lines", "test")
            with store.run_transaction(begun, 1.0, LINES) as tx:
                row = (1, 1, "O-1", 2, "2025-01-01T00:00:00", None, '["O-1",2]')
                tx.stage([(*row, to_micros(parse_ts(row[4])))])
                other.execute(
                    "INSERT INTO lines (\"order\", line, at, run_id) VALUES ('O-1', 2, '2025-01-02', 0)"
                )
                merged: list[Merged] = []
                merging = threading.Thread(target=lambda: merged.append(tx.merge(None, None)))
                merging.start()
                deadline = time.monotonic() + 30
                while not fetch(
                    pg_db,
                    f"SELECT 1 FROM pg_stat_activity WHERE pid = {store.backend_pid} "
                    "AND wait_event_type = 'Lock'",
                ):
                    assert time.monotonic() < deadline, "the merge never waited"
                    time.sleep(0.02)
                other.commit()
                merging.join(30)
                tx.finish(
                    begun.model_copy(update={"status": RunStatus.SUCCESS, "staged": 1, "stale": 1}),
                    {},
                )
        finally:
            other.close()
            store.close()
        assert merged == [Merged(loaded=0, stale=1, skipped=0, late=0)]
        assert fetch(pg_db, "SELECT run_id FROM lines WHERE \"order\" = 'O-1'") == [(0,)]
        assert fetch(
            pg_db, "SELECT step, key, detail FROM lineage WHERE run_id = 2 ORDER BY id"
        ) == [
            ("stage", '["O-1",2]', None),
            ("stale", '["O-1",2]', "kept ts 2025-01-02T00:00:00 over 2025-01-01T00:00:00"),
        ]

    def test_an_older_row_committed_mid_merge_of_new_keys_is_replaced(
        self, pg_db: str, write_jsonl: Any
    ) -> None:
        """Keys new to the target go in by plain INSERT; when another session commits one of
        them meanwhile, the insert fails on it and the upsert takes over: the staged record,
        newer, replaces the committed row and counts as loaded."""
        run(write_jsonl([{"order": "O-0", "line": 1, "at": "2025-01-01"}]), pg_db, spec=LINES)
        store = PostgresStore(pg_db)
        other = psycopg.connect(pg_db)
        try:
            begun = store.begin_run("lines", "test")
            with store.run_transaction(begun, 1.0, LINES) as tx:
                row = (1, 1, "O-1", 2, "2025-01-03T00:00:00", None, '["O-1",2]')
                tx.stage([(*row, to_micros(parse_ts(row[4])))])
                other.execute(
                    "INSERT INTO lines (\"order\", line, at, run_id) VALUES ('O-1', 2, '2025-01-02', 0)"
                )
                merged: list[Merged] = []
                merging = threading.Thread(target=lambda: merged.append(tx.merge(None, None)))
                merging.start()
                deadline = time.monotonic() + 30
                while not fetch(
                    pg_db,
                    f"SELECT 1 FROM pg_stat_activity WHERE pid = {store.backend_pid} "
                    "AND wait_event_type = 'Lock'",
                ):
                    assert time.monotonic() < deadline, "the merge never waited"
                    time.sleep(0.02)
                other.commit()
                merging.join(30)
                tx.finish(
                    begun.model_copy(
                        update={"status": RunStatus.SUCCESS, "staged": 1, "loaded": 1}
                    ),
                    {},
                )
        finally:
            other.close()
            store.close()
        assert merged == [Merged(loaded=1, stale=0, skipped=0, late=0)]
        assert fetch(pg_db, "SELECT at, run_id FROM lines WHERE \"order\" = 'O-1'") == [
            (datetime(2025, 1, 3), 2)
        ]
        assert fetch(pg_db, "SELECT COUNT(*) FROM lines") == [(2,)]

    def test_a_schema_change_waits_no_longer_than_the_lock_timeout(
        self, pg_db: str, write_jsonl: Any
    ) -> None:
        """Adding a column to a table another session reads fails after --lock-timeout, changing
        nothing, instead of queueing every reader behind it."""
        path = write_jsonl([{"order": "O-1", "line": 1, "at": "2025-01-01"}])
        run(path, pg_db, spec=LINES)
        wider = spec_of(
            "lines",
            ("order", "line"),
            {"order": "string", "line": "integer", "at": "timestamp", "note": "string"},
            optional=("note",),
        )
        reader = psycopg.connect(pg_db)
        try:
            reader.execute("SELECT * FROM lines").fetchall()  # holds its lock until rollback
            with pytest.raises(LockError, match="raise --lock-timeout"):
                run(path, pg_db, RunOptions(lock_timeout=0.2), spec=wider)
        finally:
            reader.rollback()
            reader.close()
        assert fetch(pg_db, "SELECT version FROM pipeline_schemas") == [(1,)]
        assert "note" not in [
            name
            for (name,) in fetch(
                pg_db,
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = 'lines'",
            )
        ]
        assert run(path, pg_db, spec=wider).status == "success"

    def test_step_counts_follow_the_pipeline(self, pg_db: str, write_jsonl: Any) -> None:
        """step_counts(pipeline=...) counts only that pipeline's runs."""
        run(write_jsonl([event("a", "2025-01-01T00:00:00")]), pg_db)
        run(write_jsonl([{"order": "O-1", "line": 1, "at": "2025-01-01"}] * 2), pg_db, spec=LINES)
        store = open_store(pg_db)
        try:
            counts = {c.step: c.count for c in store.step_counts(pipeline="lines")}
            everything = {c.step: c.count for c in store.step_counts()}
        finally:
            store.close()
        assert counts == {"stage": 2, "load": 1, "stale": 1}
        assert everything == {"stage": 3, "load": 2, "stale": 1}
