"""Helpers for PostgreSQL tests: one schema per test, selected through the URL's options."""

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


def fresh_schema_url(base_url: str, schema: str) -> str:
    """Create `schema` and return a URL whose connections use it as their search_path."""
    import psycopg

    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    parts = urlsplit(base_url)
    query = dict(parse_qsl(parts.query))
    query["options"] = f"-csearch_path={schema}"
    return urlunsplit(parts._replace(query=urlencode(query)))


def drop_schema(url: str) -> None:
    """Drop the schema a `fresh_schema_url` URL points at."""
    import psycopg

    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    schema = query.pop("options").split("=", 1)[1]
    base = urlunsplit(parts._replace(query=urlencode(query)))
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def execute(url: str, statement: str, params: tuple[object, ...] = ()) -> None:
    """Run one statement in its own committed transaction (for tests that change a database)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement, params)


def with_password(url: str, password: str) -> str:
    """The same URL with another password in its user part."""
    parts = urlsplit(url)
    user = (parts.username or "").strip()
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))
