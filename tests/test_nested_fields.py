"""Fields read from a path inside the record: GitHub-style events with `actor.login`, quoted keys
holding dots, missing paths as missing fields, and the objects kept whole in `attributes`."""

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from capstone import RunOptions, run
from capstone.cli import app
from capstone.spec import PipelineSpec, path_keys
from tests.conftest import fetch

EVENTS = [
    {
        "id": "1",
        "type": "PushEvent",
        "actor": {"login": "ada", "id": 7},
        "repo": {"name": "acme/app"},
        "payload": {"ref.name": "main"},
        "created_at": "2025-01-15T10:00:00Z",
    },
    {
        "id": "2",
        "type": "WatchEvent",
        "actor": {"login": "bob"},
        "repo": {"name": "acme/lib"},
        "created_at": "2025-01-15T10:01:00Z",
    },
    {
        "id": "3",
        "type": "WatchEvent",
        "actor": {"id": 9},
        "repo": {"name": "acme/lib"},
        "created_at": "2025-01-15T10:02:00Z",
    },
    {
        "id": "1",
        "type": "PushEvent",
        "actor": {"login": "ada"},
        "repo": {"name": "acme/app"},
        "created_at": "2025-01-15T09:00:00Z",
    },
]


def github(unknown: str = "keep", **fields: Any) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {
            "name": "github",
            "key": "id",
            "event_time": "created_at",
            "unknown": unknown,
            "fields": {
                "id": {"type": "string"},
                "type": {"type": "string"},
                "login": {"type": "string", "path": "actor.login"},
                "repo": {"type": "string", "path": "repo.name"},
                "ref": {"type": "string", "path": 'payload."ref.name"', "required": False},
                "created_at": {"type": "timestamp"},
                **fields,
            },
        }
    )


def events_file(path: Path, records: list[dict[str, Any]], *, array: bool = False) -> str:
    if array:
        path.write_text(json.dumps(records))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.mark.parametrize("array", [False, True], ids=["jsonl", "json-array"])
def test_github_events_load_with_path_fields(db: str, tmp_path: Path, array: bool) -> None:
    """Nested values fill their columns, a missing path is a missing field (a reject), the
    older event of a key is stale, and the objects stay whole in attributes."""
    path = events_file(tmp_path / "gh.json", EVENTS, array=array)
    summary = run(path, db, spec=github())
    assert (summary.loaded, summary.stale, summary.rejected) == (2, 1, 1)
    assert fetch(db, "SELECT id, login, repo, ref FROM github ORDER BY id") == [
        ("1", "ada", "acme/app", "main"),
        ("2", "bob", "acme/lib", None),
    ]
    [(attributes,)] = fetch(db, "SELECT attributes FROM github WHERE id = '1'")
    kept = attributes if isinstance(attributes, dict) else json.loads(attributes)
    assert kept["actor"] == {"login": "ada", "id": 7}
    assert fetch(db, "SELECT key, reason, message FROM dead_letters") == [
        ("3", "login.missing", "login: Field required")
    ]


def test_a_reject_of_a_path_field_is_skipped_on_a_forced_rerun(db: str, tmp_path: Path) -> None:
    """The key and event time of a rejected record are found through their paths too."""
    spec = github(
        id={"type": "string", "path": "meta.id"},
    )
    records = [
        {
            "meta": {"id": "a"},
            "type": "t",
            "actor": {"login": "x"},
            "repo": {"name": "r"},
            "created_at": "2025-01-15T10:00:00",
        },
        {
            "meta": {"id": "b"},
            "type": "t",
            "actor": {},
            "repo": {"name": "r"},
            "created_at": "2025-01-15T09:00:00",
        },
    ]
    path = events_file(tmp_path / "gh.jsonl", records)
    first = run(path, db, spec=spec)
    assert (first.loaded, first.rejected) == (1, 1)
    assert fetch(db, "SELECT key FROM dead_letters") == [("b",)]
    again = run(path, db, RunOptions(force=True), spec=spec)
    assert (again.skipped, again.rejected) == (2, 0)


def test_refusing_unknown_fields_knows_the_objects_paths_read(db: str, tmp_path: Path) -> None:
    """With unknown = "reject", `actor` and `repo` are not unknown; `payload` is read by a path
    too, and any other field is still refused."""
    path = events_file(tmp_path / "gh.jsonl", [EVENTS[0], {**EVENTS[1], "org": {}}])
    summary = run(path, db, spec=github(unknown="reject"))
    assert (summary.loaded, summary.rejected) == (1, 1)
    assert fetch(db, "SELECT reason FROM dead_letters") == [("org.extra_forbidden",)]


def test_dropping_unknown_fields_keeps_no_object(db: str, tmp_path: Path) -> None:
    """With unknown = "drop" the columns are filled and nothing lands in attributes."""
    path = events_file(tmp_path / "gh.jsonl", EVENTS[:2])
    assert run(path, db, spec=github(unknown="drop")).loaded == 2
    assert fetch(db, "SELECT attributes FROM github") == [(None,), (None,)]


def test_paths_read_quoted_keys() -> None:
    """Dots join keys; a quoted key may hold dots and escaped quotes."""
    assert path_keys("actor.login") == ("actor", "login")
    assert path_keys('payload."ref.name"') == ("payload", "ref.name")
    for bad in ("a..b", "a.", ".a", '"open'):
        with pytest.raises(ValueError, match="is not keys joined by dots"):
            path_keys(bad)


def test_a_bad_path_is_a_config_error() -> None:
    """A path that does not read is refused when the config is read."""
    with pytest.raises(ValidationError, match="is not keys joined by dots"):
        github(login={"type": "string", "path": "actor..login"})


def test_a_dotted_field_name_points_to_path_on_its_own_line(
    runner: CliRunner, tmp_path: Path
) -> None:
    """`"actor.login" = {...}` is refused naming line 7 (the field's, not the pipeline's) and
    how to write it with `path`."""
    config = tmp_path / "capstone.toml"
    config.write_text(
        "[pipelines.github]\n"
        'key = "id"\n'
        'event_time = "created_at"\n'
        "\n"
        "[pipelines.github.fields]\n"
        'id = { type = "string" }\n'
        '"actor.login" = { type = "string" }\n'
        'created_at = { type = "timestamp" }\n'
    )
    result = runner.invoke(app, ["pipelines", "--config", str(config)])
    assert result.exit_code == 2
    assert result.stderr.startswith(
        f"capstone: error: {config} line 7: pipelines.github: field 'actor.login' is not a "
        "column name: use letters, digits and _; to read a nested value, name the column and "
        'give the path: login = { type = ..., path = "actor.login" }'
    )
