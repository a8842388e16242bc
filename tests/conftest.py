"""Fixtures: a fresh database per test (SQLite file, or a PostgreSQL schema), sample files, the CLI.

PostgreSQL tests use the server CAPSTONE_TEST_PG_URL names, or else a throwaway server that the
first of them starts for the session (tests/pg.py) when PostgreSQL is installed."""

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from capstone.limits import RejectLimit
from capstone.pipeline import RunOptions
from capstone.summary import DeadLetter

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample_input.txt"
PG_URL = os.environ.get("CAPSTONE_TEST_PG_URL")
KEEP_REJECTS = RunOptions(max_rejects=RejectLimit.parse("100%"))
"""For a test whose file is all bad records on purpose: without a limit, a file of 10 or more
records none of which loads fails its run (`pipeline._check_belongs`)."""

os.environ.setdefault("COLUMNS", "160")  # Rich wraps at the terminal width; keep assertions stable
os.environ["NO_COLOR"] = "1"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """URL of the PostgreSQL database for this session: CAPSTONE_TEST_PG_URL, or a throwaway one."""
    if PG_URL:
        yield PG_URL
        return
    from tests.pg import server_bin_dir, throwaway_server

    bin_dir = server_bin_dir()
    if bin_dir is None:
        missing = (
            "PostgreSQL tests start a throwaway server but found no initdb: install PostgreSQL "
            "(apt-get install postgresql), or set CAPSTONE_TEST_PG_URL=postgresql://user:pw@host/db "
            "to use a running server"
        )
        if os.environ.get("CAPSTONE_REQUIRE_PG"):
            pytest.fail(f"CAPSTONE_REQUIRE_PG is set: {missing}", pytrace=False)
        pytest.skip(missing)
    with throwaway_server(bin_dir) as url:
        yield url


def _server(request: pytest.FixtureRequest) -> str:
    """The session's PostgreSQL URL, asked for only here so that SQLite-only runs start no server."""
    url: str = request.getfixturevalue("pg_server")
    return url


def _postgres_url(server: str) -> str:
    from tests.pg import fresh_schema_url

    return fresh_schema_url(server, f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    """Path of a SQLite database file that does not exist yet."""
    return str(tmp_path / "capstone.db")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database on each backend: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield str(tmp_path / "capstone.db")
        return
    url = _postgres_url(_server(request))
    yield url
    from tests.pg import drop_schema

    drop_schema(url)


@pytest.fixture
def pg_db(pg_server: str) -> Iterator[str]:
    """A fresh PostgreSQL schema, for behaviour only the PostgreSQL backend has."""
    url = _postgres_url(pg_server)
    yield url
    from tests.pg import drop_schema

    drop_schema(url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """A callable returning a new empty database on each call (for property tests)."""
    made: list[str] = []
    server = _server(request) if request.param == "postgres" else ""

    def new() -> str:
        if request.param == "sqlite":
            url = str(tmp_path_factory.mktemp("db") / "capstone.db")
        else:
            url = _postgres_url(server)
        made.append(url)
        return url

    yield new
    if request.param == "postgres":
        from tests.pg import drop_schema

        for url in made:
            drop_schema(url)


@pytest.fixture
def sample() -> str:
    """The seed's sample file: 7 records, 5 valid, 2 invalid."""
    return str(SAMPLE)


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Any:
    """Write records (dicts, or raw strings) as a JSON Lines file and return its path."""
    counter = iter(range(1_000_000))

    def write(records: list[Any], name: str | None = None) -> str:
        path = tmp_path / (name or f"input-{next(counter)}.jsonl")
        lines = [r if isinstance(r, str) else orjson.dumps(r).decode() for r in records]
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return str(path)

    return write


@pytest.fixture
def runner() -> CliRunner:
    """A Typer CLI runner."""
    return CliRunner()


def event(key: str, ts: str, value: float = 1.0, name: str = "evt", **extra: Any) -> dict[str, Any]:
    """One valid event as a dict."""
    return {"key": key, "name": name, "value": value, "ts": ts, **extra}


def fetch(db: str, sql: str) -> list[tuple[Any, ...]]:
    """Run a read-only, portable SQL query on either backend and return plain tuples."""
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db) as conn:
            return [tuple(row) for row in conn.execute(sql).fetchall()]
    import sqlite3

    lite = sqlite3.connect(db)
    try:
        return [tuple(row) for row in lite.execute(sql).fetchall()]
    finally:
        lite.close()


def stored_letters(db: str, include_resolved: bool = False) -> list[DeadLetter]:
    """The dead letters in the database, in id order (unresolved only, unless asked)."""
    from capstone.store import open_store

    store = open_store(db)
    try:
        return store.dead_letters(include_resolved=include_resolved)
    finally:
        store.close()


def change(db: str, sql: str) -> None:
    """Run one writing SQL statement on either backend, as a person editing the database would."""
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db) as conn:
            conn.execute(sql)
        return
    import sqlite3

    lite = sqlite3.connect(db)
    try:
        with lite:
            lite.execute(sql)
    finally:
        lite.close()
