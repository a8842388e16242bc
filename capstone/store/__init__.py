"""Storage backends. `open_store` picks one from a path or URL.

Both are `SqlStore`s (`capstone.store.sql`): one SQL core, with a thin dialect per database.
"""

from capstone.errors import ConfigError, StoreError
from capstone.store.sql import SqlRun, SqlStore
from capstone.store.url import database_files, is_keyword_value, is_postgres

__all__ = ["RunTransaction", "Store", "database_files", "is_postgres", "open_store"]

Store = SqlStore
"""A capstone database, whatever the backend."""
RunTransaction = SqlRun
"""One run's writes, committed together by `finish`."""


def open_store(url: str, *, create: bool = True) -> Store:
    """Open (and migrate) the database at `url`: a SQLite path, or a postgresql:// URL.

    The store is a context manager: `with open_store(url) as store:` closes it when done.
    """
    if is_postgres(url):
        try:
            from capstone.store.postgres import PostgresStore
        except ImportError:
            raise StoreError(
                "the PostgreSQL backend needs psycopg; install it with: pip install 'capstone[postgres]'"
            ) from None
        return PostgresStore(url, create=create)
    if is_keyword_value(url):
        # Refused, not read as PostgreSQL: every message, log line and redaction speaks URLs,
        # and a file path that happens to start with `word=` must not change backend silently.
        # The value is not echoed: it may carry a password.
        raise ConfigError(
            "--db looks like a libpq keyword/value string (host=... dbname=...); give PostgreSQL "
            "as a URL, postgresql://USER:PASSWORD@HOST:5432/DBNAME (for a SQLite file of that "
            "name, write ./ before it)"
        )
    if not url.strip() or url == ":memory:":
        # SQLite would open a private database that vanishes with the process: a run would
        # report success and keep nothing. An unset variable in `--db "$DB"` ends up here.
        raise ConfigError(
            f"--db {url!r} names no file (SQLite would keep nothing); give a file path or a "
            "postgresql:// URL"
        )
    scheme, separator, _ = url.partition("://")
    if separator and scheme.isidentifier():
        raise ConfigError(
            f"--db {scheme}:// is not a database capstone can use; give a SQLite file path or a "
            "postgresql:// URL"
        )
    from capstone.store.sqlite import SQLiteStore

    return SQLiteStore(url, create=create)
