"""`capstone init --from FILE`: a pipeline drafted from a sample loads that sample with no
reject, in every format, and the draft never replaces a pipeline."""

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from capstone import run
from capstone.cli import app
from capstone.config import load_config
from capstone.draft import draft_pipeline, pipeline_name
from capstone.errors import ConfigError


def github_events(path: Path, count: int = 300) -> str:
    """GitHub-style events, gzip-compressed: nested objects, an optional one, a name with a dot."""
    with gzip.open(path, "wt") as fh:
        for i in range(count):
            record = {
                "id": str(40_000_000_000 + i),
                "type": "PushEvent" if i % 3 else "WatchEvent",
                "actor": {"login": f"user{i % 17}", "id": i % 17},
                "repo": {"name": f"acme/repo{i % 5}"},
                "public": True,
                "created_at": f"2025-01-15T{i // 60 % 24:02d}:{i % 60:02d}:00Z",
                "x.trace": "t",
            }
            if i % 4 == 0:
                record["org"] = {"login": "acme"}
            fh.write(json.dumps(record) + "\n")
    return str(path)


def euro_clicks(path: Path, count: int = 200) -> str:
    """A semicolon CSV with decimal commas, epoch-millisecond times and true/false cells."""
    rows = ["click_id;user;amount;ts;ok"] + [
        f"{i};u{i % 9};{i % 13},{i % 100:02d};{1736899200000 + i * 1000};{str(i % 2 == 0).lower()}"
        for i in range(count)
    ]
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def sensor_array(path: Path, count: int = 60) -> str:
    """A JSON array with day-first times and a field that is sometimes null."""
    records = [
        {"sensor": f"s{i}", "at": f"15/01/2025 10:{i:02d}", "celsius": 20.5 + i, "note": None}
        for i in range(count)
    ]
    path.write_text(json.dumps(records))
    return str(path)


def draft_and_load(
    runner: CliRunner, tmp_path: Path, db: str, sample: str, *options: str
) -> dict[str, object]:
    config = tmp_path / "capstone.toml"
    result = runner.invoke(app, ["init", "--from", sample, "--path", str(config), *options])
    assert result.exit_code == 0, result.output
    name = result.stdout.split("'")[1]
    loaded = runner.invoke(
        app, ["run", "-p", name, "-i", sample, "--db", db, "--config", str(config), "--json"]
    )
    assert loaded.exit_code == 0, loaded.output
    summary: dict[str, object] = json.loads(loaded.stdout)
    return summary


def test_a_gzip_json_lines_sample_loads_with_no_reject(
    runner: CliRunner, db: str, tmp_path: Path
) -> None:
    """Objects become json fields, the optional one is not required, `id` is the key and
    `created_at` the event time; a name that cannot be a column stays in attributes."""
    sample = github_events(tmp_path / "gh-events.jsonl.gz")
    summary = draft_and_load(runner, tmp_path, db, sample)
    assert (summary["input_records"], summary["loaded"], summary["rejected"]) == (300, 300, 0)
    spec = load_config(tmp_path / "capstone.toml").pipeline("gh_events")
    assert (spec.key, spec.event_time) == (("id",), "created_at")
    assert spec.fields["actor"].type == "json"
    assert spec.fields["org"].required is False
    assert "x.trace" not in spec.fields


def test_a_semicolon_csv_sample_records_its_dialect(
    runner: CliRunner, db: str, tmp_path: Path
) -> None:
    """The draft finds the delimiter, the decimal commas, epoch milliseconds and booleans."""
    sample = euro_clicks(tmp_path / "clicks.csv")
    summary = draft_and_load(runner, tmp_path, db, sample)
    assert (summary["loaded"], summary["rejected"]) == (200, 0)
    spec = load_config(tmp_path / "capstone.toml").pipeline("clicks")
    assert (spec.delimiter, spec.decimal) == (";", ",")
    assert spec.fields["ts"].format == "epoch_ms"
    assert [spec.fields[n].type for n in ("click_id", "amount", "ok")] == [
        "integer",
        "float",
        "boolean",
    ]


def test_a_json_array_sample_with_day_first_times(
    runner: CliRunner, db: str, tmp_path: Path
) -> None:
    """Times like 15/01/2025 10:05 get their strptime layout; an always-null field is left to
    attributes rather than guessed."""
    sample = sensor_array(tmp_path / "sensors.json")
    summary = draft_and_load(runner, tmp_path, db, sample, "--pipeline", "sensors")
    assert (summary["loaded"], summary["rejected"]) == (60, 0)
    spec = load_config(tmp_path / "capstone.toml").pipeline("sensors")
    assert spec.fields["at"].format == "%d/%m/%Y %H:%M"
    assert "note" not in spec.fields


def test_the_draft_never_replaces_a_pipeline(runner: CliRunner, tmp_path: Path) -> None:
    """A second draft of the same name is refused with exit 2; the file is unchanged."""
    sample = euro_clicks(tmp_path / "clicks.csv")
    config = tmp_path / "capstone.toml"
    assert runner.invoke(app, ["init", "--from", sample, "--path", str(config)]).exit_code == 0
    before = config.read_text()
    again = runner.invoke(app, ["init", "--from", sample, "--path", str(config)])
    assert again.exit_code == 2
    assert again.stderr == (
        f"capstone: error: {config} already has a pipeline 'clicks'; name the draft with "
        "--pipeline NAME\n"
    )
    assert config.read_text() == before


def test_given_key_and_event_time_win(tmp_path: Path) -> None:
    """--key and --event-time are taken as given (a composite key too)."""
    sample = euro_clicks(tmp_path / "clicks.csv")
    draft = draft_pipeline(sample, key=["user", "click_id"], event_time="ts")
    assert (draft.spec.key, draft.spec.event_time) == (("user", "click_id"), "ts")


def test_an_id_that_repeats_is_the_key_of_an_event_feed(tmp_path: Path) -> None:
    """Later events of an order repeat its id: the id is the key (its repeats are updates), not
    another field that happens to be unique in the sample."""
    path = tmp_path / "orders.csv"
    path.write_text(
        "order_id;amount;updated_at\nA1;10,5;2025-01-01T10:00:00\nA2;7,25;2025-01-01T11:00:00\n"
        "A1;11,0;2025-01-02T10:00:00\n"
    )
    draft = draft_pipeline(str(path))
    assert draft.spec.key == ("order_id",)
    assert "2 values in 3 records" in draft.key_why


def test_a_constant_id_is_no_key(tmp_path: Path) -> None:
    """An id-named field with one value in every record names nothing: a unique field is the
    key instead."""
    path = tmp_path / "constant.jsonl"
    path.write_text(
        '{"id": "x", "n": "a", "ts": "2025-01-01T00:00:00"}\n'
        '{"id": "x", "n": "b", "ts": "2025-01-01T00:00:01"}\n'
    )
    assert draft_pipeline(str(path)).spec.key == ("n",)


def test_without_a_unique_field_the_key_must_be_given(tmp_path: Path) -> None:
    """No field is unique: the error names --key."""
    path = tmp_path / "dupes.jsonl"
    path.write_text('{"k": "a", "ts": "2025-01-01T00:00:00"}\n' * 3)
    with pytest.raises(ConfigError, match="name it with --key FIELD"):
        draft_pipeline(str(path))


def test_without_a_time_field_the_event_time_must_be_given(tmp_path: Path) -> None:
    """No field holds a time in every record: the error names --event-time."""
    path = tmp_path / "timeless.jsonl"
    path.write_text('{"id": 1, "n": "x"}\n{"id": 2, "n": "y"}\n')
    with pytest.raises(ConfigError, match="name it with --event-time FIELD"):
        draft_pipeline(str(path))


def test_a_key_that_is_not_a_field_is_refused(tmp_path: Path) -> None:
    """A misspelt --key names the fields there are."""
    sample = euro_clicks(tmp_path / "clicks.csv")
    with pytest.raises(ConfigError, match=r"'clik_id' is not a field .*click_id, user"):
        draft_pipeline(sample, key=["clik_id"])


def test_pipeline_names_come_from_file_names() -> None:
    """The name is the file's first stem, as an identifier."""
    assert pipeline_name("landing/events-2025-01.jsonl.gz") == "events_2025_01"
    assert pipeline_name("2025-01.csv") == "p_2025_01"


def test_the_sample_size_bounds_what_is_read(tmp_path: Path) -> None:
    """--sample N reads N records."""
    sample = euro_clicks(tmp_path / "clicks.csv")
    assert draft_pipeline(sample, sample=25).records == 25


def test_a_drafted_pipeline_runs_through_the_library(db: str, tmp_path: Path) -> None:
    """The drafted spec is a PipelineSpec the library loads with directly."""
    sample = github_events(tmp_path / "gh.jsonl.gz", count=50)
    summary = run(sample, db, spec=draft_pipeline(sample).spec)
    assert (summary.loaded, summary.rejected) == (50, 0)


def test_a_parquet_sample_loads_with_no_reject(runner: CliRunner, db: str, tmp_path: Path) -> None:
    """A Parquet file written by pyarrow: integers, a zoned timestamp column, a struct and a
    decimal are drafted as integer, timestamp, json and string fields that load every row."""
    import datetime as dt
    from decimal import Decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = 120
    table = pa.table(
        {
            "event_id": pa.array(range(rows), pa.int64()),
            "created_at": pa.array(
                [
                    dt.datetime(2025, 1, 15, tzinfo=dt.UTC) + dt.timedelta(minutes=i)
                    for i in range(rows)
                ],
                pa.timestamp("ms", tz="UTC"),
            ),
            "actor": [{"login": f"u{i % 7}"} for i in range(rows)],
            "amount": pa.array([Decimal(f"{i}.50") for i in range(rows)], pa.decimal128(8, 2)),
        }
    )
    sample = tmp_path / "events.parquet"
    pq.write_table(table, sample)
    summary = draft_and_load(runner, tmp_path, db, str(sample))
    assert (summary["loaded"], summary["rejected"]) == (rows, 0)
    spec = load_config(tmp_path / "capstone.toml").pipeline("events_feed")
    assert (spec.key, spec.event_time) == (("event_id",), "created_at")
    assert spec.fields["actor"].type == "json"


def test_the_built_in_name_is_never_drafted(tmp_path: Path) -> None:
    """events.jsonl drafts `events_feed`; asking for `events` by name is refused."""
    path = tmp_path / "events.jsonl"
    path.write_text('{"id": 1, "ts": "2025-01-01T00:00:00"}\n')
    assert draft_pipeline(str(path)).spec.name == "events_feed"
    with pytest.raises(ConfigError, match="'events' is the built-in pipeline"):
        draft_pipeline(str(path), name="events")
