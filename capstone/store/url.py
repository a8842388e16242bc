"""What a database path or URL names: which backend, and which files the database consists of."""

__all__ = ["database_files", "is_postgres"]

_SQLITE_COMPANIONS = ("-wal", "-shm")
"""Files SQLite keeps beside the database in WAL mode; writing over one corrupts the database."""


def is_postgres(url: str) -> bool:
    """Whether `url` names a PostgreSQL database rather than a SQLite file."""
    return url.startswith(("postgresql://", "postgres://"))


def database_files(url: str) -> tuple[str, ...]:
    """The files the database at `url` consists of (none for PostgreSQL), existing or not."""
    if is_postgres(url):
        return ()
    return (url, *(url + suffix for suffix in _SQLITE_COMPANIONS))
