"""Pipelines defined in capstone.toml: config checks, typed tables, keys, policies, schema changes."""

import json
import math
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from capstone import RunOptions, run
from capstone.cli import app
from capstone.config import load_config, starter_config
from capstone.errors import ConfigError, InputError
from capstone.spec import PipelineSpec
from capstone.store import open_store
from tests.conftest import change, fetch, stored_letters

ORDERS = """\
[pipelines.orders]
key = ["order_id", "line"]
event_time = "updated_at"
unknown = "{unknown}"

[pipelines.orders.fields]
order_id = {{ type = "string", min_length = 3, max_length = 8, pattern = "^O-[0-9]+$" }}
line = {{ type = "integer", min = 1, max = 99 }}
status = {{ type = "string", allowed = ["placed", "paid", "shipped"] }}
amount = {{ type = "float", min = 0 }}
gift = {{ type = "boolean", required = false }}
updated_at = {{ type = "timestamp" }}
details = {{ type = "json", required = false }}
{more}"""

EVERYTHING = RunOptions(future_tolerance=None)


def orders(tmp_path: Path, unknown: str = "keep", more: str = "") -> PipelineSpec:
    """The orders pipeline from a config file written to tmp_path."""
    path = tmp_path / "capstone.toml"
    path.write_text(ORDERS.format(unknown=unknown, more=more))
    return load_config(path).pipeline("orders")


def order(
    order_id: str = "O-1", line: int = 1, at: str = "10:00", **changes: Any
) -> dict[str, Any]:
    """One valid order line, updated at 2025-03-01 `at`."""
    record = {
        "order_id": order_id,
        "line": line,
        "status": "placed",
        "amount": 9.5,
        "updated_at": f"2025-03-01T{at}:00",
    }
    return record | changes


def reasons(db: str) -> list[str]:
    return [reason for (reason,) in fetch(db, "SELECT reason FROM dead_letters ORDER BY id")]


def plain(value: Any) -> Any:
    """Backend-neutral value: PostgreSQL datetimes as ISO text, SQLite 0/1 booleans as bool."""
    return value.isoformat() if isinstance(value, datetime) else value


# -- the config file -----------------------------------------------------------------------------


def test_starter_config_defines_a_valid_orders_pipeline(tmp_path: Path) -> None:
    """`capstone init`'s file loads: orders has a composite key and every field type."""
    path = tmp_path / "capstone.toml"
    path.write_text(starter_config())
    spec = load_config(path).pipeline("orders")
    assert spec.key == ("order_id", "line")
    assert spec.event_time == "updated_at"
    assert {f.type for f in spec.fields.values()} == {
        "string",
        "integer",
        "float",
        "boolean",
        "timestamp",
        "json",
    }


def test_without_a_config_only_events_exists(tmp_path: Path, monkeypatch: Any) -> None:
    """With no capstone.toml in the folder, `events` runs and other names are usage errors."""
    monkeypatch.chdir(tmp_path)
    config = load_config()
    assert list(config.pipelines) == ["events"]
    with pytest.raises(ConfigError, match=r"no pipeline 'orders'.*capstone init"):
        config.pipeline("orders")


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    """--config pointing nowhere says so and how to make one."""
    with pytest.raises(ConfigError, match=r"does not exist.*capstone init"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        (
            'amount = { type = "decimal" }',
            10,
            "pipelines.orders.fields.amount.type: Input should be",
        ),
        ('amount = { type = "float", min = 5, max = 1 }', 10, "min (5) is greater than max"),
        ('amount = { type = "float", max_length = 3 }', 10, "apply to string fields"),
        ('amount = { type = "float", colour = "red" }', 10, "colour: is not a setting"),
        (
            'amount = { type = "string", pattern = "([" }',
            10,
            "is not a regular expression capstone can run",
        ),
    ],
)
def test_field_mistakes_name_file_line_setting_and_fix(
    tmp_path: Path, change: str, line: int, message: str
) -> None:
    """A bad field definition is reported with the file, its line, the setting and the fix."""
    path = tmp_path / "capstone.toml"
    text = ORDERS.format(unknown="keep", more="").replace(
        'amount = { type = "float", min = 0 }', change
    )
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"{path} line {line}: " in str(caught.value)
    assert message in str(caught.value)
    assert "capstone init" in str(caught.value)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[pipelines.orders]\nevnt_time = "ts"\n', "evnt_time: is not a setting"),
        ("[pipeline.orders]\n", "pipeline: is not a setting"),
        (
            '[pipelines.orders]\nkey = "id"\nevent_time = "ts"\n[pipelines.orders.fields]\n'
            'ts = { type = "timestamp" }\n',
            "key field 'id' is not declared",
        ),
        (
            '[pipelines.orders]\nkey = "id"\nevent_time = "ts"\n[pipelines.orders.fields]\n'
            'id = { type = "string" }\nts = { type = "string" }\n',
            "must be a required timestamp",
        ),
        (
            '[pipelines.orders]\nkey = "id"\nevent_time = "ts"\n[pipelines.orders.fields]\n'
            'id = { type = "float" }\nts = { type = "timestamp" }\n',
            "must be a string or integer",
        ),
        (
            '[pipelines.orders]\nkey = "id"\nevent_time = "ts"\n[pipelines.orders.fields]\n'
            'id = { type = "string", required = false }\nts = { type = "timestamp" }\n',
            "key field 'id' must be required",
        ),
        (
            '[pipelines.orders]\nkey = "id"\nevent_time = "ts"\n[pipelines.orders.fields]\n'
            'id = { type = "string" }\nts = { type = "timestamp" }\nrun_id = { type = "integer" }\n',
            "'run_id' is a column capstone adds",
        ),
        (
            '[pipelines.orders]\n[pipelines.orders.fields]\nid = { type = "string" }\n',
            "must also name its key and event_time",
        ),
        ('[pipelines.orders]\ntarget = "lineage"\n', "'lineage' is a capstone table"),
        ('[pipelines.orders]\ntarget = "drop table"\n', "is not a table name"),
        ('[pipelines.orders]\nlookback = "soon"\n', "lookback"),
        (
            '[pipelines.orders]\nkey = "id"\nevent_time = "ts"\n[pipelines.orders.fields]\n'
            'id = { type = "string", min_length = 5, max_length = 3 }\nts = { type = "timestamp" }\n',
            "min_length (5) is greater than max_length (3)",
        ),
        (
            '[pipelines.orders]\nkey = "id"\nevent_time = "ts"\n[pipelines.orders.fields]\n'
            'id = { type = "string", allowed = [1, 2] }\nts = { type = "timestamp" }\n',
            "allowed holds a value no string field can have",
        ),
        (
            '[pipelines.orders]\nkey = "id"\nevent_time = "ts"\n[pipelines.orders.fields]\n'
            'id = { type = "integer", allowed = [1.5, true] }\nts = { type = "timestamp" }\n',
            "allowed holds a value no integer field can have",
        ),
        (
            '[pipelines.orders]\nkey = "id"\nevent_time = "ts"\n[pipelines.orders.fields]\n'
            'id = { type = "string" }\nts = { type = "timestamp" }\nv = { type = "float", min = nan }\n',
            "min and max must be finite numbers",
        ),
        ("[pipelines.orders]\nlookback = -7200\n", "lookback: a duration cannot be negative"),
        ("[pipelines.orders]\nfuture_tolerance = -5\n", "a duration cannot be negative"),
        ('[pipelines.orders]\ntarget = "t1\\n"\n', "is not a table name"),
        (
            '[pipelines.orders]\nkey = "id"\nevent_time = "ts"\n[pipelines.orders.fields]\n'
            'id = { type = "string" }\nts = { type = "timestamp" }\n_raw = { type = "string" }\n',
            "'_raw' is a name dead-letter exports use",
        ),
        (
            '[pipelines.orders]\nkey = "id"\nevent_time = "ts"\n[pipelines.orders.fields]\n'
            '"id\\n" = { type = "string" }\nts = { type = "timestamp" }\n',
            "is not a column name",
        ),
        ('[pipelines.a]\ntarget = "t1"\n[pipelines.b]\ntarget = "t1"\n', "share target table 't1'"),
        ("[pipelines.events]\n", "'events' is the built-in pipeline"),
        ("[pipelines.orders\n", "is not valid TOML"),
    ],
)
def test_config_mistakes_are_usage_errors(tmp_path: Path, toml: str, message: str) -> None:
    """Each kind of config mistake gives one ConfigError (exit 2) naming it."""
    path = tmp_path / "capstone.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=None) as caught:
        load_config(path)
    assert message in str(caught.value)
    assert caught.value.exit_code == 2


def test_a_pipeline_without_fields_has_the_event_shape(tmp_path: Path) -> None:
    """`[pipelines.replica]` alone is an events-shaped pipeline with its own table."""
    path = tmp_path / "capstone.toml"
    path.write_text('[pipelines.replica]\nlookback = "1h"\n')
    spec = load_config(path).pipeline("replica")
    assert (spec.target, spec.key, spec.event_time) == ("replica", ("key",), "ts")
    assert spec.lookback.total_seconds() == 3600


# -- loading records -----------------------------------------------------------------------------


def test_composite_key_keeps_the_newest_per_key(db: str, tmp_path: Path, write_jsonl: Any) -> None:
    """(order_id, line) identifies a row; only a strictly newer updated_at replaces it."""
    spec = orders(tmp_path)
    path = write_jsonl(
        [
            order("O-1", 1, "10:00"),
            order("O-1", 2, "10:00"),
            order("O-1", 1, "10:05", status="paid"),
            order("O-1", 1, "09:00", status="shipped"),  # older: stale
            order("O-2", 1, "10:00"),
        ]
    )
    summary = run(path, db, spec=spec)
    assert (summary.staged, summary.loaded, summary.stale) == (5, 4, 1)
    rows = fetch(db, "SELECT order_id, line, status FROM orders ORDER BY order_id, line")
    assert rows == [("O-1", 1, "paid"), ("O-1", 2, "placed"), ("O-2", 1, "placed")]
    lineage = fetch(db, "SELECT DISTINCT key FROM lineage ORDER BY key")
    assert lineage == [('["O-1",1]',), ('["O-1",2]',), ('["O-2",1]',)]


def test_every_field_type_lands_in_a_typed_column(
    db: str, tmp_path: Path, write_jsonl: Any
) -> None:
    """string, integer, float, boolean, timestamp and JSON come back as what was sent."""
    spec = orders(tmp_path)
    details = {"carrier": "UPS", "boxes": [1, 2], "note": None}
    path = write_jsonl(
        [order(gift=True, amount=3, updated_at="2025-03-01T11:00:00+01:00", details=details)]
    )
    assert run(path, db, spec=spec).loaded == 1
    [row] = fetch(db, "SELECT order_id, line, amount, gift, updated_at, details FROM orders")
    order_id, line, amount, gift, updated_at, stored = row
    assert (order_id, line, amount, bool(gift)) == ("O-1", 1, 3.0, True)
    assert isinstance(line, int)
    assert isinstance(amount, float)
    assert plain(updated_at) == "2025-03-01T10:00:00"  # converted to UTC
    assert (orjson.loads(stored) if isinstance(stored, str) else stored) == details


def test_optional_fields_may_be_missing_null_or_blank_in_csv(db: str, tmp_path: Path) -> None:
    """An optional field absent, null, or an empty CSV cell is stored as NULL."""
    spec = orders(tmp_path)
    csv = tmp_path / "orders.csv"
    csv.write_text(
        "order_id,line,status,amount,gift,updated_at\n"
        "O-1,1,placed,9.5,,2025-03-01T10:00:00\n"
        "O-1,2,paid,1,true,2025-03-01T10:00:00\n"
    )
    summary = run(str(csv), db, spec=spec)
    assert (summary.loaded, summary.rejected) == (2, 0)
    rows = fetch(db, "SELECT line, gift, details FROM orders ORDER BY line")
    assert [(line, None if gift is None else bool(gift), d) for line, gift, d in rows] == [
        (1, None, None),
        (2, True, None),
    ]


def test_json_cells_in_csv_load_as_the_json_they_hold(
    db: str, tmp_path: Path, write_jsonl: Any
) -> None:
    """A CSV cell of a json field is parsed as JSON text: the row is stored exactly as the same
    record written in JSON Lines would be, not as a string that contains JSON."""
    spec = orders(tmp_path)
    csv = tmp_path / "orders.csv"
    csv.write_text(
        "order_id,line,status,amount,updated_at,details\n"
        'O-1,1,placed,9.5,2025-03-01T10:00:00,"{""gift_wrap"": true, ""n"": [1, 2]}"\n'
        "O-1,2,placed,9.5,2025-03-01T10:00:00,42\n"
        'O-1,3,placed,9.5,2025-03-01T10:00:00,"""text"""\n'
        "O-1,4,placed,9.5,2025-03-01T10:00:00,\n"
    )
    assert run(str(csv), db, spec=spec).loaded == 4
    details = [{"gift_wrap": True, "n": [1, 2]}, 42, "text", None]
    lines = [order("O-2", n, "11:00", details=d) for n, d in enumerate(details, 1)]
    assert run(write_jsonl(lines), db, spec=spec).loaded == 4
    query = "SELECT line, details FROM orders WHERE order_id = '{}' ORDER BY line"
    from_csv = fetch(db, query.format("O-1"))
    assert from_csv == fetch(db, query.format("O-2"))
    as_json = db.startswith("postgresql://")  # jsonb comes back parsed; SQLite keeps JSON text
    assert [d if as_json or d is None else orjson.loads(d) for _, d in from_csv] == details


def test_a_csv_cell_that_is_not_json_is_rejected_with_its_field(db: str, tmp_path: Path) -> None:
    """A json cell that does not parse is a reason like any other (beside the row's others); the
    kept record holds its text and names it in `_cells`, so an export shows what to fix."""
    spec = orders(tmp_path)
    csv = tmp_path / "orders.csv"
    csv.write_text(
        "order_id,line,status,amount,updated_at,details\n"
        "O-1,1,placed,9.5,2025-03-01T10:00:00,hello\n"
        "O-1,x,placed,9.5,2025-03-01T10:00:00,{bad\n"
    )
    summary = run(str(csv), db, spec=spec)
    assert (summary.staged, summary.rejected) == (0, 2)
    letters = stored_letters(db)
    assert [letter.reason for letter in letters] == [
        "details.json_invalid",
        "details.json_invalid,line.int_parsing",
    ]
    assert letters[0].raw == "O-1,1,placed,9.5,2025-03-01T10:00:00,hello"
    assert letters[0].key == '["O-1",1]'
    assert letters[0].record is not None
    assert (letters[0].record["details"], letters[0].record["_cells"]) == ("hello", ["details"])


def test_a_required_json_field_refuses_null_and_blank(db: str, tmp_path: Path) -> None:
    """null is a JSON value, but stored it would be NULL like no value at all: a required json
    field refuses it, whether written `null`, left blank in a CSV, or null in JSON Lines."""
    spec = orders(tmp_path, more='meta = { type = "json" }\n')
    csv = tmp_path / "orders.csv"
    csv.write_text(
        "order_id,line,status,amount,updated_at,meta\n"
        "O-1,1,placed,9.5,2025-03-01T10:00:00,null\n"
        "O-1,2,placed,9.5,2025-03-01T10:00:00,\n"
        'O-1,3,placed,9.5,2025-03-01T10:00:00,"{""ok"": true}"\n'
    )
    summary = run(str(csv), db, spec=spec)
    assert (summary.loaded, summary.rejected) == (1, 2)
    letters = stored_letters(db)
    assert [letter.reason for letter in letters] == ["meta.missing", "meta.missing"]


def test_a_bad_json_cell_at_or_below_the_watermark_is_skipped_once_rejected(
    db: str, tmp_path: Path
) -> None:
    """Like any invalid record behind the watermark, a row is rejected the first time and
    skipped once its dead letter exists (an earlier run rejected it)."""
    spec = orders(tmp_path)
    good = tmp_path / "good.csv"
    good.write_text(
        "order_id,line,status,amount,updated_at\nO-1,1,placed,9.5,2025-03-01T10:00:00\n"
    )
    run(str(good), db, spec=spec)
    late = tmp_path / "late.csv"
    late.write_text(
        "order_id,line,status,amount,updated_at,details\n"
        "O-1,2,placed,9.5,2025-03-01T09:00:00,hello\n"
    )
    summary = run(str(late), db, spec=spec)
    assert (summary.skipped, summary.rejected) == (0, 1)
    again = run(str(late), db, spec=spec)
    assert (again.skipped, again.rejected, again.dead_letters) == (1, 0, 0)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"order_id": "O-"}, "order_id.string_too_short"),
        ({"order_id": "O-123456789"}, "order_id.string_too_long"),
        ({"order_id": "X-1"}, "order_id.string_pattern_mismatch"),
        ({"order_id": 17}, "order_id.string_type"),
        ({"line": 0}, "line.greater_than_equal"),
        ({"line": 100}, "line.less_than_equal"),
        ({"line": 1.5}, "line.int_from_float"),
        ({"line": True}, "line.invalid"),
        ({"line": "1_0"}, "line.invalid"),
        ({"amount": "1_000.5"}, "amount.invalid"),
        ({"amount": -0.01}, "amount.greater_than_equal"),
        ({"amount": "lots"}, "amount.float_parsing"),
        ({"status": "lost"}, "status.not_allowed"),
        ({"gift": "perhaps"}, "gift.bool_parsing"),
        ({"updated_at": "yesterday"}, "updated_at.invalid"),
        ({"updated_at": "2999-01-01T00:00:00"}, "updated_at.in_future"),
        ({"status": None}, "status.string_type"),
    ],
)
def test_each_constraint_rejects_with_its_reason(
    db: str, tmp_path: Path, write_jsonl: Any, change: dict[str, Any], code: str
) -> None:
    """A record breaking one constraint is dead-lettered with that field's reason code."""
    spec = orders(tmp_path)
    summary = run(write_jsonl([order(**change), order("O-2")]), db, spec=spec)
    assert (summary.loaded, summary.rejected) == (1, 1)
    assert reasons(db) == [code]


def test_values_beyond_64_bits_are_dead_lettered(db: str, tmp_path: Path, write_jsonl: Any) -> None:
    """Integers beyond 64 bits, in a field, a JSON field or an extra field, are rejected, not a crash."""
    spec = orders(tmp_path, more='qty = { type = "integer", required = false }')
    records = [
        order("O-1", qty=2**63),
        order("O-2", qty=-(2**63) - 1),
        order("O-3", details={"x": 2**70}),
        order("O-4", note=2**70),
        order("O-5", qty=2**63 - 1, details={"x": -(2**63)}),
    ]
    summary = run(write_jsonl([json.dumps(record) for record in records]), db, spec=spec)
    assert (summary.loaded, summary.rejected) == (1, 4)
    assert reasons(db) == [
        "qty.less_than_equal",
        "qty.greater_than_equal",
        "details.unstorable",
        "attributes.unstorable",
    ]
    assert fetch(db, "SELECT qty FROM orders") == [(2**63 - 1,)]


def test_nan_and_infinity_are_dead_lettered_not_stored_as_null(
    db: str, tmp_path: Path, write_jsonl: Any
) -> None:
    """NaN and Infinity are not JSON: in a JSON field or an extra field the line is malformed
    (the parser reads them, and orjson used to store them as null)."""
    spec = orders(tmp_path)
    records = [
        order("O-1", details={"weight": math.inf}),
        order("O-2", note=[1, math.nan]),
        order("O-3", details={"weight": 1.5}),
    ]
    summary = run(write_jsonl([json.dumps(record) for record in records]), db, spec=spec)
    assert (summary.loaded, summary.rejected) == (1, 2)
    assert reasons(db) == ["malformed.json", "malformed.json"]


def test_a_missing_required_field_is_named(db: str, tmp_path: Path, write_jsonl: Any) -> None:
    """Every missing required field gets its own reason."""
    spec = orders(tmp_path)
    record = order()
    del record["status"], record["amount"]
    run(write_jsonl([record]), db, spec=spec)
    assert reasons(db) == ["status.missing,amount.missing"]
    [(key,)] = fetch(db, "SELECT key FROM dead_letters")
    assert key == '["O-1",1]'


@pytest.mark.parametrize(
    ("unknown", "loaded", "attributes", "reason"),
    [
        ("keep", 1, {"channel": "web"}, None),
        ("drop", 1, None, None),
        ("reject", 0, None, "channel.extra_forbidden"),
    ],
)
def test_unknown_field_policies(
    db: str,
    tmp_path: Path,
    write_jsonl: Any,
    unknown: str,
    loaded: int,
    attributes: Any,
    reason: str | None,
) -> None:
    """Undeclared fields are kept in `attributes`, dropped, or make the record a reject."""
    spec = orders(tmp_path, unknown=unknown)
    summary = run(write_jsonl([order(channel="web")]), db, spec=spec)
    assert summary.loaded == loaded
    if loaded:
        [(stored,)] = fetch(db, "SELECT attributes FROM orders")
        assert (orjson.loads(stored) if isinstance(stored, str) else stored) == attributes
    assert reasons(db) == ([reason] if reason else [])


@pytest.mark.parametrize("unknown", ["keep", "drop", "reject"])
def test_the_event_fields_read_alike_whatever_the_unknown_policy(
    db: str, tmp_path: Path, write_jsonl: Any, unknown: str
) -> None:
    """A pipeline with the seed's fields strips key whitespace under every `unknown` policy, so
    changing the policy never splits " a " from "a"."""
    path = tmp_path / "capstone.toml"
    path.write_text(f'[pipelines.ev]\ntarget = "ev"\nunknown = "{unknown}"\n')
    spec = load_config(path).pipeline("ev")
    records = [
        {"key": " a ", "name": "n", "value": 1, "ts": "2025-01-01T00:00:00"},
        {"key": "a", "name": "n", "value": 2, "ts": "2025-01-02T00:00:00"},
    ]
    summary = run(write_jsonl(records), db, spec=spec)
    assert (summary.loaded, summary.stale) == (2, 0)
    assert fetch(db, "SELECT key, value FROM ev") == [("a", 2.0)]


@pytest.mark.parametrize("unknown", ["keep", "reject"])
def test_the_event_fields_under_another_key_are_traced_by_that_key(
    db: str, tmp_path: Path, runner: CliRunner, write_jsonl: Any, unknown: str
) -> None:
    """key = ["key", "name"] over the seed's fields: lineage tells (a, n1) from (a, n2)."""
    path = tmp_path / "capstone.toml"
    path.write_text(
        f'[pipelines.ev]\ntarget = "ev"\nkey = ["key", "name"]\nunknown = "{unknown}"\n'
    )
    spec = load_config(path).pipeline("ev")
    records = [
        {"key": "a", "name": "n1", "value": 1, "ts": "2025-01-01T00:00:00"},
        {"key": "a", "name": "n2", "value": 2, "ts": "2025-01-01T00:00:00"},
    ]
    assert run(write_jsonl(records), db, spec=spec).loaded == 2
    result = runner.invoke(
        app, ["lineage", "-p", "ev", "--config", str(path), "--db", db, "a", "n1", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert [entry["step"] for entry in orjson.loads(result.stdout)] == ["stage", "load"]


def test_a_pattern_anchors_at_the_very_end_and_cannot_backtrack_for_ever(
    db: str, tmp_path: Path, write_jsonl: Any
) -> None:
    """`$` does not match before a final newline (the key "O-1001\\n" is refused), a pattern
    that would backtrack exponentially checks a hostile value at once, and lookaround, which the
    linear-time engine lacks, is a config error."""
    path = tmp_path / "capstone.toml"
    fields = 'id = { type = "string", pattern = "^O-[0-9]+$" }\nts = { type = "timestamp" }\n'
    nested = 'id = { type = "string", pattern = "^(a+)+$" }\nts = { type = "timestamp" }\n'
    header = '[pipelines.p]\ntarget = "p"\nkey = "id"\nevent_time = "ts"\n[pipelines.p.fields]\n'
    path.write_text(header + fields)
    spec = load_config(path).pipeline("p")
    summary = run(write_jsonl([{"id": "O-1\n", "ts": "2025-01-01T00:00:00"}]), db, spec=spec)
    assert summary.rejected == 1
    path.write_text(header.replace('"p"', '"q"', 1) + nested)
    spec = load_config(path).pipeline("p")
    started = time.monotonic()
    hostile = {"id": "a" * 40 + "!", "ts": "2025-01-01T00:00:00"}
    assert run(write_jsonl([hostile]), db, spec=spec).rejected == 1
    assert time.monotonic() - started < 30  # exponential backtracking would take hours
    path.write_text(header + fields.replace("^O-[0-9]+$", "(?<=O)-1"))
    with pytest.raises(ConfigError, match="lookaround and backreferences are not supported"):
        load_config(path)


def test_a_reject_with_a_whole_float_in_an_integer_key_is_traced_by_that_key(
    db: str, tmp_path: Path, runner: CliRunner, write_jsonl: Any
) -> None:
    """channel 2.0 is read as 2 when valid; a rejected record's lineage uses 2 as well."""
    path = tmp_path / "capstone.toml"
    path.write_text(
        '[pipelines.s]\ntarget = "s"\nkey = ["device", "channel"]\nevent_time = "ts"\n'
        '[pipelines.s.fields]\ndevice = { type = "string" }\nchannel = { type = "integer" }\n'
        'reading = { type = "float" }\nts = { type = "timestamp" }\n'
    )
    spec = load_config(path).pipeline("s")
    record = {"device": "d1", "channel": 2.0, "reading": "x", "ts": "2025-01-01T00:00:00"}
    assert run(write_jsonl([record]), db, spec=spec).rejected == 1
    result = runner.invoke(
        app, ["lineage", "-p", "s", "--config", str(path), "--db", db, "d1", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert [entry["step"] for entry in orjson.loads(result.stdout)] == ["reject"]


def test_the_event_fields_in_another_order_land_in_their_own_columns(
    db: str, tmp_path: Path, write_jsonl: Any
) -> None:
    """Declared ts, value, name, key: each value goes to its column (the seed's model yields them
    in the seed's order, so it must not serve this pipeline)."""
    path = tmp_path / "capstone.toml"
    path.write_text(
        '[pipelines.reord]\ntarget = "reord"\nkey = "key"\nevent_time = "ts"\n'
        "[pipelines.reord.fields]\n"
        'ts = { type = "timestamp" }\nvalue = { type = "float" }\n'
        'name = { type = "string", min_length = 1, max_length = 256 }\n'
        'key = { type = "string", min_length = 1, '
        "max_length = 256 }\n"
    )
    spec = load_config(path).pipeline("reord")
    record = {"key": "k1", "name": "n1", "value": 5, "ts": "2020-01-01T00:00:00"}
    assert run(write_jsonl([record]), db, spec=spec).loaded == 1
    [(key, name, value)] = fetch(db, "SELECT key, name, value FROM reord")
    assert (key, name, value) == ("k1", "n1", 5.0)


def test_a_rejected_record_is_traced_under_its_stripped_key(
    db: str, runner: CliRunner, write_jsonl: Any
) -> None:
    """`lineage a` finds the reject of a record whose key was " a ", as the model reads keys."""
    run(write_jsonl([{"key": " a ", "name": "n", "value": "x", "ts": "2025-01-01T00:00:00"}]), db)
    result = runner.invoke(app, ["lineage", "a", "--db", db, "--json"])
    assert result.exit_code == 0, result.output
    assert [entry["step"] for entry in orjson.loads(result.stdout)] == ["reject"]


def test_pipeline_settings_give_lookback_and_tolerance(
    db: str, tmp_path: Path, write_jsonl: Any
) -> None:
    """A pipeline's lookback lets late records through without --lookback."""
    path = tmp_path / "capstone.toml"
    path.write_text('[pipelines.late]\nlookback = "2h"\n')
    spec = load_config(path).pipeline("late")
    first = {"key": "a", "name": "n", "value": 1, "ts": "2025-01-01T12:00:00"}
    run(write_jsonl([first]), db, spec=spec)
    late = {"key": "b", "name": "n", "value": 1, "ts": "2025-01-01T10:30:00"}
    assert run(write_jsonl([late]), db, spec=spec).loaded == 1
    assert run(write_jsonl([late]), db, RunOptions(lookback=timedelta(0)), spec=spec).skipped == 1


def test_two_pipelines_share_a_database(
    db: str, tmp_path: Path, write_jsonl: Any, sample: str
) -> None:
    """events and orders keep their own tables, watermarks and counts in one database."""
    spec = orders(tmp_path)
    run(sample, db)
    summary = run(write_jsonl([order()]), db, spec=spec)
    assert summary.watermark_before is None  # not events' watermark
    store = open_store(db)
    try:
        assert store.get_watermark("events") == "2025-01-15T12:00:00"
        assert store.get_watermark("orders") == "2025-03-01T10:00:00"
        assert sum(c.count for c in store.step_counts(pipeline="orders")) == 2
        assert store.pipeline_version("orders") == ("orders", 1)
    finally:
        store.close()
    assert fetch(db, "SELECT COUNT(*) FROM target") == [(4,)]
    assert fetch(db, "SELECT COUNT(*) FROM orders") == [(1,)]


# -- schema changes ------------------------------------------------------------------------------


def test_adding_an_optional_field_adds_a_column(db: str, tmp_path: Path, write_jsonl: Any) -> None:
    """A new optional field becomes a column; old rows hold NULL; the change is recorded."""
    run(write_jsonl([order("O-1")]), db, spec=orders(tmp_path))
    spec = orders(tmp_path, more='coupon = { type = "string", required = false }\n')
    summary = run(write_jsonl([order("O-2", at="11:00", coupon="SPRING")]), db, spec=spec)
    assert summary.loaded == 1
    rows = fetch(db, "SELECT order_id, coupon FROM orders ORDER BY order_id")
    assert rows == [("O-1", None), ("O-2", "SPRING")]
    changes = fetch(db, "SELECT version, change FROM schema_changes WHERE pipeline = 'orders'")
    assert changes == [(1, "created table orders"), (2, "added optional field 'coupon'")]


def test_loosening_a_constraint_changes_no_table(db: str, tmp_path: Path, write_jsonl: Any) -> None:
    """A constraint change is recorded, and the next run validates with it."""
    run(write_jsonl([order()]), db, spec=orders(tmp_path))
    spec = orders(tmp_path)
    spec = spec.model_copy(
        update={
            "fields": spec.fields
            | {"amount": spec.fields["amount"].model_copy(update={"min": -10})}
        }
    )
    assert run(write_jsonl([order("O-2", at="11:00", amount=-5)]), db, spec=spec).loaded == 1
    [(change,)] = fetch(db, "SELECT change FROM schema_changes WHERE version = 2")
    assert change == "constraints of field 'amount' changed"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'amount = { type = "float", min = 0 }',
            'amount = { type = "string" }',
            "field 'amount' changed type float -> string",
        ),
        ('amount = { type = "float", min = 0 }', "", "field 'amount' was removed"),
        (
            'key = ["order_id", "line"]',
            'key = ["order_id"]',
            "key (order_id, line) became (order_id)",
        ),
        ("", 'coupon = { type = "string" }\n', "new field 'coupon' is required"),
    ],
)
def test_changes_that_would_lose_data_are_refused(
    db: str, tmp_path: Path, write_jsonl: Any, old: str, new: str, message: str
) -> None:
    """Type, key and removal changes are refused before the run is logged; nothing is touched."""
    run(write_jsonl([order()]), db, spec=orders(tmp_path))
    before = fetch(db, "SELECT * FROM orders")
    path = tmp_path / "capstone.toml"
    text = ORDERS.format(unknown="keep", more="")
    path.write_text(text.replace(old, new) if old else text + new)
    spec = load_config(path).pipeline("orders")
    with pytest.raises(ConfigError) as caught:
        run(write_jsonl([order("O-2")]), db, spec=spec)
    assert message in str(caught.value)
    assert "Nothing was changed" in str(caught.value)
    assert fetch(db, "SELECT * FROM orders") == before
    assert fetch(db, "SELECT COUNT(*), MAX(version) FROM schema_changes") == [(1, 1)]
    assert fetch(db, "SELECT COUNT(*) FROM run_log") == [(1,)]


def test_a_new_target_table_is_the_way_out_of_a_refused_change(
    db: str, tmp_path: Path, write_jsonl: Any
) -> None:
    """Pointing the pipeline at a new table starts it fresh; the old table stays as it was."""
    run(write_jsonl([order()]), db, spec=orders(tmp_path))
    spec = orders(tmp_path).model_copy(update={"target": "orders_v2", "key": ("order_id",)})
    summary = run(write_jsonl([order("O-2", at="11:00")]), db, spec=spec)
    assert summary.loaded == 1
    assert fetch(db, "SELECT COUNT(*) FROM orders") == [(1,)]
    assert fetch(db, "SELECT order_id FROM orders_v2") == [("O-2",)]


def test_a_new_target_table_gets_the_records_the_old_one_has(
    db: str, tmp_path: Path, write_jsonl: Any
) -> None:
    """Moving to a new table clears the watermark, so rerunning the same file fills it instead of
    skipping every record as already loaded; the change is recorded."""
    path = write_jsonl([order(), order("O-2")])
    run(path, db, spec=orders(tmp_path))
    spec = orders(tmp_path).model_copy(update={"target": "orders_v2"})
    summary = run(path, db, spec=spec)
    assert (summary.skipped, summary.loaded, summary.watermark_before) == (0, 2, None)
    assert fetch(db, "SELECT COUNT(*) FROM orders_v2") == [(2,)]
    [(change,)] = fetch(db, "SELECT change FROM schema_changes WHERE change LIKE 'target%'")
    assert "watermark cleared" in change


def test_a_table_capstone_does_not_own_is_never_taken(
    db: str, tmp_path: Path, write_jsonl: Any
) -> None:
    """A target that already exists outside capstone is refused with the fix."""
    open_store(db).close()
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db) as conn:
            conn.execute("CREATE TABLE orders (id integer)")
    else:
        import sqlite3

        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE orders (id integer)")
    with pytest.raises(ConfigError, match="already exists and is no pipeline's current target"):
        run(write_jsonl([order()]), db, spec=orders(tmp_path))


def test_moving_back_to_a_former_target_or_changing_its_case_is_refused_clearly(
    db: str, tmp_path: Path, write_jsonl: Any
) -> None:
    """The table a pipeline moved away from is kept as it was and not written again; a target
    that differs from the current one only in case is named as such."""
    spec = orders(tmp_path)
    run(write_jsonl([order()]), db, spec=spec)
    run(write_jsonl([order()]), db, spec=spec.model_copy(update={"target": "orders_v2"}))
    with pytest.raises(ConfigError, match="it may be one a pipeline moved away from"):
        run(write_jsonl([order()]), db, spec=spec)
    upper = spec.model_copy(update={"target": "ORDERS_V2"})
    with pytest.raises(ConfigError, match="differs from its table 'orders_v2' only in case"):
        run(write_jsonl([order()]), db, spec=upper)


# -- the command line ----------------------------------------------------------------------------


def test_init_writes_a_starter_and_refuses_to_overwrite(tmp_path: Path, runner: CliRunner) -> None:
    """init writes capstone.toml once; a second init without --force exits 2."""
    path = tmp_path / "capstone.toml"
    first = runner.invoke(app, ["init", "--path", str(path)])
    assert first.exit_code == 0, first.output
    assert "[pipelines.orders]" in path.read_text()
    again = runner.invoke(app, ["init", "--path", str(path)])
    assert again.exit_code == 2
    assert "already exists" in again.stderr


def test_pipelines_lists_config_and_state(
    db: str, tmp_path: Path, runner: CliRunner, write_jsonl: Any
) -> None:
    """`pipelines --json` shows each pipeline's table, key, watermark and last run."""
    orders(tmp_path)
    config = str(tmp_path / "capstone.toml")
    loaded = runner.invoke(
        app,
        [
            "run",
            "--pipeline",
            "orders",
            "--config",
            config,
            "--db",
            db,
            "-q",
            "--input",
            write_jsonl([order()]),
        ],
    )
    assert loaded.exit_code == 0, loaded.output
    result = runner.invoke(app, ["pipelines", "--config", config, "--db", db, "--json"])
    assert result.exit_code == 0, result.output
    listed = {p["pipeline"]: p for p in orjson.loads(result.stdout)}
    assert set(listed) == {"events", "orders"}
    assert listed["orders"]["key"] == ["order_id", "line"]
    assert listed["orders"]["watermark"] == "2025-03-01T10:00:00"
    assert listed["orders"]["last_run"]["status"] == "success"
    assert listed["events"]["last_run"] is None
    table = runner.invoke(app, ["pipelines", "--config", config, "--db", db])
    assert "order_id, line" in table.stdout


def test_pipelines_on_a_database_without_capstone_tables_lists_the_config(
    db: str, runner: CliRunner
) -> None:
    """No database yet (no SQLite file, an empty PostgreSQL schema): the pipelines, no state."""
    result = runner.invoke(app, ["pipelines", "--db", db, "--json"])
    assert result.exit_code == 0, result.output
    listed = {p["pipeline"]: p for p in orjson.loads(result.stdout)}
    assert "events" in listed
    assert all(p["last_run"] is None and p["watermark"] is None for p in listed.values())


def test_unknown_pipeline_exits_2(runner: CliRunner, tmp_path: Path, sample: str) -> None:
    """run --pipeline with an undefined name is a usage error naming the known ones."""
    result = runner.invoke(
        app,
        [
            "run",
            "--pipeline",
            "ordrs",
            "--input",
            sample,
            "--db",
            str(tmp_path / "x.db"),
            "--config",
            str(tmp_path / "none.toml"),
        ],
    )
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_refused_schema_change_exits_2_with_one_line(
    db: str, tmp_path: Path, runner: CliRunner, write_jsonl: Any
) -> None:
    """A refused change is one stderr line and exit 2."""
    run(write_jsonl([order()]), db, spec=orders(tmp_path))
    path = tmp_path / "capstone.toml"
    path.write_text(path.read_text().replace('type = "float", min = 0', 'type = "integer"'))
    result = runner.invoke(
        app,
        ["run", "-p", "orders", "--config", str(path), "--db", db, "-i", write_jsonl([order()])],
    )
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "changed type float -> integer" in result.stderr


def test_lineage_takes_the_parts_of_a_composite_key(
    db: str, tmp_path: Path, runner: CliRunner, write_jsonl: Any
) -> None:
    """`lineage --pipeline orders O-1 1` finds the record; a wrong part count exits 2."""
    run(write_jsonl([order(), order(at="11:00")]), db, spec=orders(tmp_path))
    config = str(tmp_path / "capstone.toml")
    base = ["lineage", "--pipeline", "orders", "--config", config, "--db", db]
    found = runner.invoke(app, [*base, "--json", "O-1", "1"])
    assert found.exit_code == 0, found.output
    assert [e["step"] for e in orjson.loads(found.stdout)] == ["stage", "load", "stage", "load"]
    wrong = runner.invoke(app, [*base, "O-1"])
    assert wrong.exit_code == 2
    assert "2 part(s)" in wrong.stderr


def test_replay_uses_the_pipeline_definition(
    db: str, tmp_path: Path, runner: CliRunner, write_jsonl: Any
) -> None:
    """After loosening a constraint, `replay --pipeline orders` loads and resolves the reject."""
    run(write_jsonl([order(status="lost")]), db, spec=orders(tmp_path))
    path = tmp_path / "capstone.toml"
    path.write_text(path.read_text().replace('"shipped"]', '"shipped", "lost"]'))
    result = runner.invoke(
        app, ["replay", "-p", "orders", "--config", str(path), "--db", db, "--json"]
    )
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["loaded"] == 1
    assert fetch(db, "SELECT status FROM orders") == [("lost",)]


def test_a_huge_integer_stays_exact_and_rejected_through_replay(
    db: str, tmp_path: Path, runner: CliRunner, write_jsonl: Any
) -> None:
    """An integer beyond 64 bits is not rounded to a float on its way through the dead letters."""
    huge = 123456789012345678901234567
    records = [order("O-1", details={"id": huge}), order("O-2", ref=huge), order("O-3", line=huge)]
    run(write_jsonl([json.dumps(record) for record in records]), db, spec=orders(tmp_path))
    assert reasons(db) == ["details.unstorable", "attributes.unstorable", "line.less_than_equal"]
    config = str(tmp_path / "capstone.toml")
    replayed = runner.invoke(
        app, ["replay", "-p", "orders", "--config", config, "--db", db, "--json"]
    )
    assert replayed.exit_code == 0, replayed.output
    assert (orjson.loads(replayed.stdout)["loaded"], orjson.loads(replayed.stdout)["rejected"]) == (
        0,
        3,
    )
    assert fetch(db, "SELECT COUNT(*) FROM orders") == [(0,)]
    fix = tmp_path / "fix.jsonl"
    exported = runner.invoke(
        app, ["dead-letters", "export", "-p", "orders", "--db", db, "--output", str(fix)]
    )
    assert exported.exit_code == 0, exported.output
    assert fix.read_text().count(str(huge)) == 3
    [(key,)] = fetch(db, "SELECT key FROM dead_letters WHERE reason = 'line.less_than_equal'")
    assert key == f'["O-3",{huge}]'


def test_lineage_of_a_key_beyond_64_bits_is_simply_not_found(
    db: str, tmp_path: Path, runner: CliRunner, write_jsonl: Any
) -> None:
    """A key part no record can have gives an empty lineage, not an internal error."""
    run(write_jsonl([order()]), db, spec=orders(tmp_path))
    config = str(tmp_path / "capstone.toml")
    result = runner.invoke(
        app,
        ["lineage", "-p", "orders", "--config", config, "--db", db, "O-1", str(2**90)],
    )
    assert result.exit_code == 1
    assert (
        result.stderr
        == f"capstone: error: no lineage for key '[\"O-1\",{2**90}]'; check the key (keys are case-sensitive)\n"
    )


def columns_of(db: str, table: str) -> list[str]:
    if db.startswith("postgresql://"):
        sql = (
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            f"current_schema() AND table_name = '{table}' ORDER BY ordinal_position"
        )
    else:
        sql = f"SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
    return [name for (name,) in fetch(db, sql)]


def test_a_failed_run_takes_its_schema_change_back(db: str, tmp_path: Path) -> None:
    """A run that adds a column and then fails mid-file leaves no column and no version behind."""
    csv = tmp_path / "first.csv"
    header = "order_id,line,status,amount,updated_at"
    csv.write_text(f"{header}\nO-1,1,placed,1,2025-03-01T10:00:00\n")
    run(str(csv), db, spec=orders(tmp_path))
    before = columns_of(db, "orders")
    spec = orders(tmp_path, more='coupon = { type = "string", required = false }\n')
    bad = tmp_path / "bad.csv"
    rows = "".join(f"O-{i},1,placed,1,2025-03-01T11:00:00\n" for i in range(2, 5000))
    bad.write_bytes(f"{header}\n{rows}".encode() + b"O-9,1,\xff\xfe,1,2025-03-01T11:00:00\n")
    with pytest.raises(InputError, match="UTF-8"):
        run(str(bad), db, RunOptions(batch_size=500), spec=spec)
    assert columns_of(db, "orders") == before
    assert "coupon" not in before
    assert fetch(db, "SELECT MAX(version) FROM pipeline_schemas") == [(1,)]
    assert fetch(db, "SELECT COUNT(*) FROM orders") == [(1,)]


def test_a_config_error_names_the_other_settings_to_fix(tmp_path: Path) -> None:
    """The one-line error explains the first problem and names the others, so one round of
    fixes can cover them all."""
    path = tmp_path / "capstone.toml"
    path.write_text(
        '[pipelines.x]\nkey = "id"\nevent_time = "ts"\n[pipelines.x.fields]\n'
        'id = { type = "strin" }\nts = { type = "timestamp" }\nq = { type = "integer", min = "z" }\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "line 5: pipelines.x.fields.id.type: Input should be 'string'" in message
    assert "(also: pipelines.x.fields.q.min)" in message


# -- limits: no config or stored definition bricks a pipeline --------------------------------------

NUMBERS = """\
[pipelines.nums]
key = "id"
event_time = "ts"

[pipelines.nums.fields]
id = {{ type = "string" }}
ts = {{ type = "timestamp" }}
{field}
"""


def nums(tmp_path: Path, field: str) -> Path:
    path = tmp_path / "capstone.toml"
    path.write_text(NUMBERS.format(field=field))
    return path


def test_arrays_nested_thousands_deep_are_a_config_error_naming_the_line(
    tmp_path: Path, runner: CliRunner
) -> None:
    """A value nested 3,000 deep is a usage error (exit 2) with its line, not a RecursionError."""
    path = tmp_path / "capstone.toml"
    path.write_text('[pipelines.p]\nkey = "k"\nx = ' + "[" * 3000 + "]" * 3000 + "\n")
    result = runner.invoke(app, ["pipelines", "--config", str(path), "--db", str(tmp_path / "d")])
    assert result.exit_code == 2, result.output
    assert f"{path} line 3: arrays or tables nest too deeply" in result.stderr


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ('n = { type = "string", max_length = 18446744073709551616 }', "max_length: Input should"),
        ('n = { type = "string", min_length = 100000000000000000000 }', "min_length: Input should"),
        ('n = { type = "integer", allowed = [99999999999999999999999] }', "64 bits"),
        ('n = { type = "integer", min = 9223372036854775808 }', "64 bits"),
        ('n = { type = "float", max = -9223372036854775809 }', "64 bits"),
    ],
)
def test_numeric_settings_beyond_their_bounds_are_usage_errors(
    tmp_path: Path, runner: CliRunner, field: str, message: str
) -> None:
    """Lengths past 2**30 and integers past 64 bits are refused up front, exit 2, with the line."""
    path = nums(tmp_path, field)
    result = runner.invoke(app, ["pipelines", "--config", str(path), "--db", str(tmp_path / "d")])
    assert result.exit_code == 2, result.output
    assert f"{path} line 8: pipelines.nums.fields.n" in result.stderr
    assert message in result.stderr


def test_integer_settings_round_trip_exactly_through_the_stored_definition(
    db: str, tmp_path: Path, write_jsonl: Any, runner: CliRunner
) -> None:
    """Bounds and allowed values above 2**53 stay exact: stored, read back, and enforced."""
    low = 2**53 + 1
    path = nums(
        tmp_path, f'n = {{ type = "integer", min = {low}, allowed = [{low}, {2**62 + 3}] }}'
    )
    records = [
        {"id": "a", "ts": "2025-03-01T10:00:00", "n": low},
        {"id": "b", "ts": "2025-03-01T10:00:00", "n": 2**53},
        {"id": "c", "ts": "2025-03-01T10:00:00", "n": 2**62 + 2},
    ]
    args = ["run", "--pipeline", "nums", "--config", str(path), "--db", db, "--quiet"]
    for _ in range(2):
        result = runner.invoke(app, [*args, "--input", write_jsonl(records)])
        assert result.exit_code == 0, result.output
    [(definition,)] = fetch(db, "SELECT definition FROM pipeline_schemas WHERE pipeline = 'nums'")
    stored = orjson.loads(definition)["fields"]["n"]
    assert (stored["min"], stored["allowed"]) == (low, [low, 2**62 + 3])
    assert fetch(db, "SELECT id, n FROM nums") == [("a", low)]
    assert fetch(db, "SELECT COUNT(*) FROM schema_changes WHERE pipeline = 'nums'") == [(1,)]


def test_a_stored_definition_with_settings_refused_today_is_read_by_its_layout(
    db: str, tmp_path: Path, write_jsonl: Any, runner: CliRunner
) -> None:
    """An older capstone's `allowed: [1e+23]` on an integer field no longer blocks the pipeline:
    the table's layout is checked, and the run stores the configured constraints instead."""
    path = nums(tmp_path, 'n = { type = "integer", required = false }')
    args = ["run", "--pipeline", "nums", "--config", str(path), "--db", db, "--quiet"]
    record = {"id": "a", "ts": "2025-03-01T10:00:00", "n": 1}
    assert runner.invoke(app, [*args, "--input", write_jsonl([record])]).exit_code == 0
    [(definition,)] = fetch(db, "SELECT definition FROM pipeline_schemas WHERE pipeline = 'nums'")
    old = definition.replace('"allowed":null', '"allowed":[1e+23]', 1)
    assert old != definition
    change(db, f"UPDATE pipeline_schemas SET definition = '{old}' WHERE pipeline = 'nums'")
    result = runner.invoke(app, [*args, "--input", write_jsonl([record | {"id": "b"}])])
    assert result.exit_code == 0, result.output
    assert fetch(db, "SELECT id FROM nums ORDER BY id") == [("a",), ("b",)]
    [(healed,)] = fetch(db, "SELECT definition FROM pipeline_schemas WHERE pipeline = 'nums'")
    assert "1e+23" not in healed


def test_an_unreadable_stored_definition_names_a_way_out_that_works(
    db: str, tmp_path: Path, write_jsonl: Any, runner: CliRunner
) -> None:
    """A definition edited into nonsense fails in one line whose steps bring the pipeline back."""
    path = nums(tmp_path, "")
    args = ["run", "--pipeline", "nums", "--config", str(path), "--db", db, "--quiet"]
    records = [{"id": "a", "ts": "2025-03-01T10:00:00"}]
    assert runner.invoke(app, [*args, "--input", write_jsonl(records)]).exit_code == 0
    change(db, "UPDATE pipeline_schemas SET definition = '{broken' WHERE pipeline = 'nums'")
    result = runner.invoke(app, [*args, "--input", write_jsonl(records)])
    assert result.exit_code == 1, result.output
    message = result.stderr
    assert "the stored definition of pipeline 'nums' cannot be read" in message
    assert "(a bug" not in message
    assert "DELETE FROM pipeline_schemas WHERE pipeline = 'nums'" in message
    change(db, "DELETE FROM pipeline_schemas WHERE pipeline = 'nums'")
    change(db, "DROP TABLE nums")
    reset = ["reset-watermark", "-p", "nums", "--config", str(path), "--db", db, "--yes"]
    assert runner.invoke(app, reset).exit_code == 0
    result = runner.invoke(app, [*args, "--input", write_jsonl(records)])
    assert result.exit_code == 0, result.output
    assert fetch(db, "SELECT id FROM nums") == [("a",)]


def test_an_error_about_a_setting_names_the_line_that_sets_it(
    tmp_path: Path, runner: CliRunner
) -> None:
    """A check on the whole pipeline that names one setting (a bad target name) points at that
    setting's line, not at the pipeline's header."""
    path = tmp_path / "capstone.toml"
    path.write_text(
        "[pipelines.meters]\n"
        'key = "meter"\n'
        'event_time = "ts"\n'
        'target = "bad name!"\n'
        "\n"
        "[pipelines.meters.fields]\n"
        'meter = { type = "string" }\n'
        'ts = { type = "timestamp" }\n'
    )
    result = runner.invoke(app, ["pipelines", "--config", str(path), "--db", str(tmp_path / "d")])
    assert result.exit_code == 2, result.output
    assert f"{path} line 4: pipelines.meters: target 'bad name!' is not a table name" in (
        result.stderr
    )
