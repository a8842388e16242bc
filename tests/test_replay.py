"""Dead letters: listing, export, replay of stored letters, and replay of an edited export."""

from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from capstone import RunOptions, run
from capstone.cli import app
from capstone.config import load_config
from capstone.errors import InputError
from capstone.pipeline import replay_dead_letters
from capstone.store import open_store
from tests.conftest import event, fetch, stored_letters


def replay(db: str, **filters: Any) -> Any:
    store = open_store(db)
    try:
        return replay_dead_letters(store, RunOptions(), **filters)
    finally:
        store.close()


def test_replay_keeps_still_invalid_letters_with_todays_reason(db: str, sample: str) -> None:
    """A replay under unchanged rules resolves nothing and keeps both letters unresolved."""
    run(sample, db)
    summary = replay(db)
    assert (summary.input_records, summary.rejected, summary.staged) == (2, 2, 0)
    assert summary.dead_letters == 0
    letters = stored_letters(db)
    assert [letter.resolved_run_id for letter in letters] == [None, None]
    assert all(letter.times_seen == 2 for letter in letters)


def test_replay_accepts_letters_valid_under_todays_rules(db: str, write_jsonl: Any) -> None:
    """A letter rejected as future-dated loads once its time has come (here: a wider tolerance)."""
    path = write_jsonl([event("late", "2099-01-01T00:00:00"), event("ok", "2025-01-01T00:00:00")])
    first = run(path, db)
    assert first.rejected == 1
    store = open_store(db)
    summary = replay_dead_letters(store, RunOptions(future_tolerance=timedelta(days=365 * 100)))
    [letter] = store.dead_letters(include_resolved=True)
    store.close()
    assert (summary.staged, summary.loaded) == (1, 1)
    assert letter.resolved_run_id == summary.run_id
    assert summary.watermark == "2099-01-01T00:00:00"


def test_replay_bypasses_the_watermark_but_keeps_the_guard(
    db: str, write_jsonl: Any, tmp_path: Path
) -> None:
    """A replayed record older than the watermark is staged, and stale if the target is newer."""
    bad = {"key": "a", "name": "n", "value": "one", "ts": "2025-01-01T00:00:00"}
    run(write_jsonl([bad, event("a", "2025-01-02T00:00:00", 2.0)]), db)
    export = tmp_path / "fix.jsonl"
    [letter] = stored_letters(db)
    fixed = letter.record | {"value": 1, "_dead_letter": letter.id}  # type: ignore[operator]
    export.write_bytes(orjson.dumps(fixed) + b"\n")
    summary = run(str(export), db, replay=True)
    assert (summary.skipped, summary.staged, summary.stale) == (0, 1, 1)
    [(value,)] = fetch(db, "SELECT value FROM target WHERE key = 'a'")
    assert value == 2.0
    store = open_store(db)
    assert store.dead_letters() == []
    store.close()


def test_export_then_replay_of_fixed_file_resolves(
    runner: CliRunner, db: str, sample: str, tmp_path: Path
) -> None:
    """export writes one JSON object per letter with its id; a fixed file replays and resolves."""
    run(sample, db)
    out = tmp_path / "fix.jsonl"
    result = runner.invoke(app, ["dead-letters", "export", "--output", str(out), "--db", db])
    assert result.exit_code == 0, result.output
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [line["_dead_letter"] for line in lines] == [1, 2]
    lines[0]["key"] = "evt-004"
    lines[1]["value"] = 7
    out.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    replayed = runner.invoke(app, ["run", "--input", str(out), "--replay", "--db", db, "--json"])
    assert orjson.loads(replayed.stdout)["loaded"] == 2
    listing = runner.invoke(app, ["dead-letters", "--db", db, "--json"])
    assert orjson.loads(listing.stdout) == []
    attributes = fetch(db, "SELECT attributes FROM target WHERE key = 'evt-004'")
    assert attributes == [(None,)]


def export(db: str, path: Path) -> list[dict[str, Any]]:
    """Export the events pipeline's open letters to `path` and return its lines, parsed."""
    result = CliRunner().invoke(app, ["dead-letters", "export", "--output", str(path), "--db", db])
    assert result.exit_code == 0, result.output
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def write_lines(path: Path, lines: list[dict[str, Any]]) -> str:
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return str(path)


GOOD = '{"key": "a", "name": "n", "value": 1, "ts": "2025-01-01T00:00:00"}'


def test_a_line_that_never_parsed_exports_as_raw_text_that_a_replay_resolves(
    db: str, tmp_path: Path, write_jsonl: Any
) -> None:
    """Broken JSON exports as {"_dead_letter": ID, "_raw": text}: replayed unchanged it updates
    its letter (no second one); with the text fixed, it loads and resolves the letter."""
    run(write_jsonl([GOOD.replace('"value": 1', '"value": 1e309')]), db)
    [line] = export(db, tmp_path / "fix.jsonl")
    assert line == {"_dead_letter": 1, "_raw": GOOD.replace('"value": 1', '"value": 1e309')}
    again = run(write_lines(tmp_path / "same.jsonl", [line]), db, replay=True)
    assert (again.rejected, again.dead_letters) == (1, 0)
    assert [(d.id, d.times_seen) for d in stored_letters(db)] == [(1, 2)]
    line["_raw"] = GOOD
    fixed = run(write_lines(tmp_path / "fixed.jsonl", [line]), db, replay=True)
    assert (fixed.staged, fixed.rejected) == (1, 0)
    assert stored_letters(db) == []


def test_a_raw_line_replaced_by_its_record_resolves_and_real_raw_fields_stay_data(
    db: str, tmp_path: Path, write_jsonl: Any
) -> None:
    """A `_raw` line replaced by the fixed record (keeping its id) resolves the letter; a record
    with an extra field that happens to be called `_raw` replays with that field intact."""
    run(write_jsonl([GOOD.replace("}", ",}")]), db)
    [line] = export(db, tmp_path / "fix.jsonl")
    record = orjson.loads(GOOD) | {"_dead_letter": line["_dead_letter"]}
    fixed = run(write_lines(tmp_path / "fixed.jsonl", [record]), db, replay=True)
    assert (fixed.staged, fixed.rejected) == (1, 0)
    assert stored_letters(db) == []
    later = {"ts": "2025-01-02T00:00:00", "value": "bad", "_raw": "frame-0x1f"}
    data = orjson.loads(GOOD.replace('"a"', '"b"')) | later
    run(write_jsonl([data]), db)
    [line] = export(db, tmp_path / "data.jsonl")
    replayed = run(
        write_lines(tmp_path / "data-fixed.jsonl", [line | {"value": 2}]), db, replay=True
    )
    assert replayed.staged == 1
    [(attributes,)] = fetch(db, "SELECT attributes FROM target WHERE key = 'b'")
    stored = orjson.loads(attributes) if isinstance(attributes, str) else attributes
    assert stored == {"_raw": "frame-0x1f"}


def test_a_still_bad_export_line_opens_its_resolved_letter_again(
    db: str, tmp_path: Path, write_jsonl: Any
) -> None:
    """Replaying the unfixed export after the fixed one: the bad record came back, so its letter
    opens again (with one more sighting) instead of a second letter appearing."""
    run(write_jsonl([GOOD.replace('"value": 1', '"value": "x"')]), db)
    [line] = export(db, tmp_path / "fix.jsonl")
    run(write_lines(tmp_path / "fixed.jsonl", [line | {"value": 1}]), db, replay=True)
    assert stored_letters(db) == []
    again = run(write_lines(tmp_path / "unfixed.jsonl", [line]), db, replay=True)
    assert (again.rejected, again.dead_letters) == (1, 0)
    assert [(d.id, d.times_seen) for d in stored_letters(db)] == [(1, 2)]


def test_an_export_line_broken_while_fixing_keeps_its_id_out_of_the_data(
    db: str, tmp_path: Path, write_jsonl: Any
) -> None:
    """A fixed export line that lost its closing brace becomes a letter whose text holds a
    `_dead_letter`; fixed through `_raw`, it loads without that id among its attributes."""
    run(write_jsonl([GOOD.replace('"value": 1', '"value": "x"')]), db)
    [line] = export(db, tmp_path / "fix.jsonl")
    broken = orjson.dumps(line | {"value": 1}).decode()[:-1]  # the closing brace lost
    run(write_jsonl([broken]), db, replay=True)
    [raw_line] = [d for d in export(db, tmp_path / "again.jsonl") if "_raw" in d]
    raw_line["_raw"] += "}"
    fixed = run(write_lines(tmp_path / "fixed.jsonl", [raw_line]), db, replay=True)
    assert (fixed.staged, fixed.rejected) == (1, 0)
    assert fetch(db, "SELECT attributes FROM target") == [(None,)]


def test_a_half_fixed_raw_line_exports_as_its_record_next_time(
    db: str, tmp_path: Path, write_jsonl: Any
) -> None:
    """A broken line whose JSON is fixed but whose value is still bad keeps the record it now
    parses to: the next export offers that record, and fixing the value resolves the letter."""
    broken = GOOD.replace('"value": 1', '"value": "x"').replace("}", ",}")
    run(write_jsonl([broken]), db)
    [line] = export(db, tmp_path / "fix.jsonl")
    line["_raw"] = broken.replace(",}", "}")
    half = run(write_lines(tmp_path / "half.jsonl", [line]), db, replay=True)
    assert (half.rejected, half.dead_letters) == (1, 0)
    [line] = export(db, tmp_path / "again.jsonl")
    assert line == orjson.loads(GOOD) | {"value": "x", "_dead_letter": 1}
    line["value"] = 1
    fixed = run(write_lines(tmp_path / "fixed.jsonl", [line]), db, replay=True)
    assert (fixed.staged, fixed.rejected) == (1, 0)
    assert stored_letters(db) == []


@pytest.mark.parametrize("batch_size", [1, 10_000])
@pytest.mark.parametrize("fixed_first", [True, False], ids=["fixed first", "bad first"])
def test_one_letter_named_twice_in_a_replay_is_never_lost(
    db: str, tmp_path: Path, write_jsonl: Any, batch_size: int, fixed_first: bool
) -> None:
    """A fixed copy and a still-bad copy of one exported letter: the bad one always keeps an
    open letter, in whichever order and batch size they come."""
    run(write_jsonl([GOOD.replace('"value": 1', '"value": "bad"')]), db)
    [line] = export(db, tmp_path / "fix.jsonl")
    fixed, bad = line | {"value": 1}, line | {"value": "worse"}
    path = write_lines(tmp_path / "both.jsonl", [fixed, bad] if fixed_first else [bad, fixed])
    summary = run(path, db, RunOptions(batch_size=batch_size), replay=True)
    assert (summary.staged, summary.rejected) == (1, 1)
    [letter] = stored_letters(db)  # the open ones: exactly one, seen by this replay
    assert letter.last_run_id == summary.run_id
    # Fixed first: letter 1 is resolved and the bad copy is a letter of its own. Bad first: the
    # bad copy spoke for letter 1, and the fixed copy loads without resolving it.
    assert letter.id == (2 if fixed_first else 1)


@pytest.mark.parametrize("batch_size", [1, 10_000])
@pytest.mark.parametrize("fixed_first", [True, False], ids=["fixed first", "bad first"])
def test_the_original_bad_line_beside_its_fix_keeps_the_letter_open(
    db: str, tmp_path: Path, write_jsonl: Any, batch_size: int, fixed_first: bool
) -> None:
    """The exact bad line (no id, same fingerprint) in the same replay as the fixed export line:
    the letter stays open, in either order and batch size."""
    bad = GOOD.replace('"value": 1', '"value": "bad"')
    run(write_jsonl([bad]), db)
    [line] = export(db, tmp_path / "fix.jsonl")
    fixed = orjson.dumps(line | {"value": 1}).decode()
    path = write_jsonl([fixed, bad] if fixed_first else [bad, fixed])
    summary = run(path, db, RunOptions(batch_size=batch_size), replay=True)
    assert (summary.staged, summary.rejected, summary.dead_letters) == (1, 1, 0)
    [letter] = stored_letters(db)
    assert (letter.id, letter.times_seen, letter.last_run_id) == (1, 2, summary.run_id)


def test_a_dead_letter_id_that_is_no_id_is_rejected(
    db: str, tmp_path: Path, write_jsonl: Any
) -> None:
    """A `_dead_letter` that is text, out of range or a boolean is named as the problem in a
    replay, not ignored (nor a crash for 2**64)."""
    for wrong in ("1", 2**64, 0, True):
        record = orjson.loads(GOOD) | {"_dead_letter": wrong}
        line = (
            orjson.dumps(record).decode()
            if wrong != 2**64
            else GOOD[:-1] + f', "_dead_letter": {wrong}}}'
        )
        summary = run(write_jsonl([line]), db, replay=True)
        assert summary.rejected == 1
    assert {letter.reason for letter in stored_letters(db)} == {"_dead_letter.not_an_id"}


@pytest.mark.parametrize("batch_size", [1, 10_000])
def test_a_bad_record_repeated_in_one_run_counts_every_sighting(
    db: str, write_jsonl: Any, batch_size: int
) -> None:
    """times_seen counts repeats within the run that creates the letter, in one batch or across
    batches, as it counts repeats in later runs."""
    bad = GOOD.replace('"value": 1', '"value": "x"')
    path = write_jsonl([bad, bad, GOOD.replace('"key": "a"', '"key": ""')])
    options = RunOptions(batch_size=batch_size, lookback=timedelta(days=1), force=True)
    first = run(path, db, options)
    assert (first.rejected, first.dead_letters) == (3, 2)
    assert [d.times_seen for d in stored_letters(db)] == [2, 1]
    again = run(path, db, options)
    assert (again.rejected, again.dead_letters) == (3, 0)
    assert [d.times_seen for d in stored_letters(db)] == [4, 2]


def test_an_export_loaded_without_replay_is_refused(db: str, sample: str, tmp_path: Path) -> None:
    """Without --replay, an export's ids would be stored as attributes and its letters stay open:
    the run fails, naming --replay, and changes nothing but its failed row."""
    run(sample, db)
    lines = export(db, tmp_path / "fix.jsonl")
    lines[1]["value"] = 7
    refusal = "so this is a dead-letter export; load it with `capstone run --replay`"
    for chosen in (lines, lines[1:]):  # still invalid first; fixed (and below the watermark)
        with pytest.raises(InputError, match=refusal):
            run(write_lines(tmp_path / "fixed.jsonl", chosen), db)
    assert len(stored_letters(db)) == 2


@pytest.mark.parametrize("unknown", ["drop", "reject"])
def test_an_export_is_refused_whatever_the_pipeline_does_with_unknown_fields(
    db: str, tmp_path: Path, write_jsonl: Any, unknown: str
) -> None:
    """Dropping or refusing unknown fields must not hide an export's `_dead_letter` ids."""
    config = tmp_path / "capstone.toml"
    config.write_text(f'[pipelines.ev]\ntarget = "ev"\nunknown = "{unknown}"\n')
    spec = load_config(config).pipeline("ev")
    record = orjson.loads(GOOD) | {"_dead_letter": 1}
    with pytest.raises(InputError, match="so this is a dead-letter export"):
        run(write_jsonl([record]), db, spec=spec)


def test_export_takes_the_database_from_the_environment(
    runner: CliRunner, db: str, sample: str, tmp_path: Path
) -> None:
    """CAPSTONE_DB is not an option typed before `export`: the export uses it."""
    run(sample, db)
    out = tmp_path / "fix.jsonl"
    result = runner.invoke(
        app, ["dead-letters", "export", "--output", str(out)], env={"CAPSTONE_DB": db}
    )
    assert result.exit_code == 0, result.output
    assert len(out.read_bytes().splitlines()) == 2


def test_a_letter_without_a_json_form_can_be_dismissed(
    runner: CliRunner, db: str, tmp_path: Path
) -> None:
    """A CSV row with the wrong cell count cannot be replayed; fixed in the CSV and loaded again,
    its letter is dismissed by a logged run. An id that is not open dismisses nothing."""
    path = tmp_path / "rows.csv"
    path.write_text("key,name,value,ts\na,n,1\n")
    run(str(path), db)
    refused = runner.invoke(app, ["dead-letters", "dismiss", "--id", "1", "--id", "9", "--db", db])
    assert refused.exit_code == 1
    assert "dead letter 9 is not open in pipeline events" in refused.stderr
    assert len(stored_letters(db)) == 1
    dismissed = runner.invoke(app, ["dead-letters", "dismiss", "--id", "1", "--db", db])
    assert dismissed.exit_code == 0, dismissed.output
    assert "dismissed 1 dead letter of pipeline events (run 3)" in dismissed.stderr
    assert stored_letters(db) == []
    runs = fetch(db, "SELECT status, source, input_records FROM run_log ORDER BY run_id")
    assert runs[1:] == [
        ("failed", "dismissal of dead letters 1, 9", 0),
        ("success", "dismissal of dead letters 1", 0),
    ]


def test_dead_letters_filter_by_reason_and_run(runner: CliRunner, db: str, sample: str) -> None:
    """--reason matches reason codes; --run the run that first wrote the letter."""
    run(sample, db)
    result = runner.invoke(app, ["dead-letters", "--reason", "float_parsing", "--db", db, "--json"])
    [letter] = orjson.loads(result.stdout)
    assert letter["key"] == "evt-005"
    assert letter["raw"] == (
        '{"key": "evt-005", "name": "api_call", "value": "not_a_number", "ts": "2025-01-15T10:30:00"}'
    )
    run(sample, db)  # run 2: every record skipped, no new letters
    none = runner.invoke(app, ["dead-letters", "--run", "2", "--db", db, "--json"])
    assert orjson.loads(none.stdout) == []
    unknown = runner.invoke(app, ["dead-letters", "--run", "9", "--db", db, "--json"])
    assert unknown.exit_code == 1
    assert "there is no run 9" in unknown.stderr


def test_replay_command_by_id(runner: CliRunner, db: str, sample: str) -> None:
    """capstone replay --id replays only that letter, as a logged run."""
    run(sample, db)
    result = runner.invoke(app, ["replay", "--id", "2", "--db", db, "--json"])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["input_records"] == 1


def test_a_replay_names_the_ids_that_are_not_open_dead_letters(
    runner: CliRunner, db: str, sample: str
) -> None:
    """--id of a letter that does not exist replays the rest and says so on stderr."""
    run(sample, db)
    result = runner.invoke(app, ["replay", "--id", "2", "--id", "99", "--db", db, "--json"])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["input_records"] == 1
    assert (
        "1 of the 2 dead letters asked for with --id is not open in pipeline events"
        in result.stderr
    )


def test_a_replay_whose_reason_matches_nothing_says_so(
    runner: CliRunner, db: str, sample: str
) -> None:
    """A --reason no open letter has (a typo, say) is named on stderr, not silently empty."""
    run(sample, db)
    result = runner.invoke(app, ["replay", "--reason", "nosuch", "--db", db])
    assert result.exit_code == 0, result.output
    assert "no open dead letters of pipeline events have a reason containing 'nosuch'" in (
        result.stderr
    )
    quiet = runner.invoke(app, ["replay", "--reason", "nosuch", "--db", db, "--quiet"])
    assert quiet.stderr == ""


def test_a_letter_holding_a_large_float_lists_and_replays(
    runner: CliRunner, db: str, write_jsonl: Any
) -> None:
    """1e20 stays a float through the stored record (PostgreSQL's jsonb writes it as a 21-digit
    integer): the list and a replay work with it."""
    line = '{"key": "", "name": "n", "value": 1e20, "ts": "2025-01-01T00:00:00"}'
    run(write_jsonl([line]), db)
    listing = runner.invoke(app, ["dead-letters", "--db", db, "--json"])
    assert listing.exit_code == 0, listing.output
    assert orjson.loads(listing.stdout)[0]["record"]["value"] == 1e20
    replayed = replay(db)
    assert (replayed.rejected, replayed.dead_letters) == (1, 0)
    [letter] = stored_letters(db)
    assert letter.reason == "key.string_too_short"


def test_csv_letters_replay_from_their_parsed_record(db: str, tmp_path: Path) -> None:
    """A CSV reject keeps its parsed row, so a replay re-validates it without the header."""
    path = tmp_path / "in.csv"
    path.write_text("key,name,value,ts\na,n,2099-01-01,2025-01-01T00:00:00\n")
    run(str(path), db)
    summary = replay(db)
    assert summary.rejected == 1
    [letter] = stored_letters(db)
    assert letter.record == {
        "key": "a",
        "name": "n",
        "value": "2099-01-01",
        "ts": "2025-01-01T00:00:00",
    }
    assert "value.float_parsing" in letter.reason


def test_csv_letters_without_a_record_keep_their_reasons_on_replay(db: str, tmp_path: Path) -> None:
    """A CSV row with the wrong number of columns has no parsed record and its raw text is not
    JSON; a replay cannot change that, so it keeps its reason instead of becoming malformed.json."""
    path = tmp_path / "in.csv"
    path.write_text("key,name,value,ts\na,n,1,2025-01-01T00:00:00,extra\n")
    run(str(path), db)
    summary = replay(db)
    assert (summary.rejected, summary.staged) == (1, 0)
    [letter] = stored_letters(db)
    assert (letter.reason, letter.times_seen) == ("malformed.columns", 2)
    assert letter.message == "row has 5 columns, the header has 4"


def test_a_csv_json_cell_fixed_in_the_export_resolves_its_letter(
    runner: CliRunner, db: str, tmp_path: Path
) -> None:
    """A row rejected for a json cell that is not JSON exports as an object naming that cell in
    `_cells`; a replay left as it is rejects it again (same letter), one with the value fixed
    loads and resolves the letter."""
    config = tmp_path / "capstone.toml"
    config.write_text(
        '[pipelines.j]\nkey = "id"\nevent_time = "ts"\n'
        '[pipelines.j.fields]\nid = { type = "string" }\nts = { type = "timestamp" }\n'
        'meta = { type = "json" }\n'
    )
    path = tmp_path / "in.csv"
    path.write_text("id,ts,meta\na,2025-01-01T00:00:00,hello\n")
    spec = load_config(config).pipeline("j")
    assert run(str(path), db, spec=spec).rejected == 1
    out = tmp_path / "fix.jsonl"
    result = runner.invoke(app, ["dead-letters", "export", "-p", "j", "-o", str(out), "--db", db])
    assert result.exit_code == 0, result.output
    line = orjson.loads(out.read_bytes())
    assert line == {
        "id": "a",
        "ts": "2025-01-01T00:00:00",
        "meta": "hello",
        "_cells": ["meta"],
        "_dead_letter": 1,
    }
    unfixed = run(str(out), db, spec=spec, replay=True)
    assert (unfixed.rejected, unfixed.dead_letters) == (1, 0)
    out.write_bytes(orjson.dumps(line | {"meta": {"note": "hello"}}) + b"\n")
    fixed = run(str(out), db, spec=spec, replay=True)
    assert (fixed.loaded, fixed.rejected) == (1, 0)
    [letter] = stored_letters(db, include_resolved=True)
    assert (letter.times_seen, letter.resolved_run_id) == (2, fixed.run_id)


def test_a_resolved_letter_opens_again_when_its_record_comes_back(
    runner: CliRunner, db: str, sample: str, tmp_path: Path
) -> None:
    """A record that was fixed and replayed, then sent again as it was, is a live problem again:
    its letter is unresolved and listed, not hidden behind the old resolution."""
    run(sample, db)
    out = tmp_path / "fix.jsonl"
    runner.invoke(app, ["dead-letters", "export", "--output", str(out), "--db", db])
    fixed = [
        orjson.dumps(orjson.loads(line) | {"key": "evt-fixed", "value": 1.0})
        for line in out.read_bytes().splitlines()
    ]
    out.write_bytes(b"\n".join(fixed) + b"\n")
    assert run(str(out), db, replay=True).loaded == 2
    again = run(sample, db, RunOptions(lookback=timedelta(days=3650), force=True))
    assert (again.rejected, again.dead_letters) == (2, 0)
    result = runner.invoke(app, ["dead-letters", "--db", db, "--json"])
    letters = orjson.loads(result.stdout)
    assert [(letter["times_seen"], letter["resolved_run_id"]) for letter in letters] == [
        (2, None),
        (2, None),
    ]


def test_replaying_an_unfixed_export_updates_the_letters_not_duplicates_them(
    runner: CliRunner, db: str, sample: str, tmp_path: Path
) -> None:
    """Still-bad records replayed from an export update their own dead letters (seen twice,
    today's reasons) instead of adding letters whose text differs only by `_dead_letter`."""
    run(sample, db)
    out = tmp_path / "fix.jsonl"
    result = runner.invoke(app, ["dead-letters", "export", "--output", str(out), "--db", db])
    assert result.exit_code == 0, result.output
    summary = run(str(out), db, replay=True)
    assert (summary.rejected, summary.dead_letters) == (2, 0)
    letters = stored_letters(db)
    assert len(letters) == 2
    assert [(letter.times_seen, letter.last_run_id) for letter in letters] == [
        (2, summary.run_id),
        (2, summary.run_id),
    ]


def test_csv_rows_with_the_wrong_cell_count_are_left_out_of_an_export(
    runner: CliRunner, db: str, tmp_path: Path
) -> None:
    """Such a row has no JSON form: written into the JSON Lines export and replayed, it would
    lose its reason to malformed.json. The export leaves it out and says so."""
    path = tmp_path / "in.csv"
    path.write_text(
        "key,name,value,ts\na,n,1,2025-01-01T00:00:00,extra\nb,n,x,2025-01-01T00:00:00\n"
    )
    run(str(path), db)
    out = tmp_path / "fix.jsonl"
    result = runner.invoke(app, ["dead-letters", "export", "--output", str(out), "--db", db])
    assert result.exit_code == 0, result.output
    assert "wrote 1 dead letter to" in result.stderr
    assert "left out 1 CSV row with no JSON form (fix those in the CSV)" in result.stderr
    [line] = out.read_bytes().splitlines()
    assert orjson.loads(line)["key"] == "b"


def test_an_export_names_the_other_pipelines_with_dead_letters(
    runner: CliRunner, db: str, sample: str, tmp_path: Path
) -> None:
    """`dead-letters` lists every pipeline's letters, an export only one pipeline's (its replay
    runs through that pipeline's rules): it says which others have letters."""
    config = tmp_path / "capstone.toml"
    config.write_text("[pipelines.other]\n")
    runner.invoke(app, ["run", "-p", "other", "--config", str(config), "-i", sample, "--db", db])
    out = tmp_path / "fix.jsonl"
    result = runner.invoke(app, ["dead-letters", "export", "--output", str(out), "--db", db])
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"wrote 0 dead letters to {out}\n"
        "other pipelines have dead letters too: other (2); export them with --pipeline NAME\n"
    )


def test_an_export_replayed_under_another_pipeline_is_refused(
    runner: CliRunner, db: str, sample: str, tmp_path: Path
) -> None:
    """Letters of pipeline `other` replayed with --pipeline events would be filed (or loaded)
    under events: the run is refused naming the right pipeline, and nothing changes."""
    config = tmp_path / "capstone.toml"
    config.write_text("[pipelines.other]\n")
    base = ["--config", str(config), "--db", db]
    runner.invoke(app, ["run", "-p", "other", "-i", sample, *base])
    out = tmp_path / "fix.jsonl"
    runner.invoke(app, ["dead-letters", "export", "-p", "other", "--output", str(out), "--db", db])
    for fixed in (False, True):
        lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
        if fixed:
            lines = [line | {"key": "k", "value": 1} for line in lines]
        path = write_lines(tmp_path / f"replay-{fixed}.jsonl", lines)
        result = runner.invoke(app, ["run", "-p", "events", "-i", path, "--replay", *base])
        assert result.exit_code == 2
        assert (
            "belongs to pipeline 'other', not 'events'; replay that export with --pipeline other"
            in (result.stderr)
        )
    assert [(d.pipeline, d.resolved_run_id) for d in stored_letters(db)] == [("other", None)] * 2
