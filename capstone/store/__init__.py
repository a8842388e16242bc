"""Storage backends. `open_store` picks one from a path or URL."""

from capstone.errors import StoreError
from capstone.store.base import STEPS, RunTransaction, Store

__all__ = ["STEPS", "RunTransaction", "Store", "open_store"]


def open_store(url: str, *, create: bool = True) -> Store:
    """Open (and migrate) the database at `url`: a SQLite path, or a postgresql:// URL."""
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from capstone.store.postgres import PostgresStore
        except ImportError:
            raise StoreError(
                "the PostgreSQL backend needs psycopg; install it with: pip install 'capstone[postgres]'"
            ) from None
        return PostgresStore(url, create=create)
    from capstone.store.sqlite import SQLiteStore

    return SQLiteStore(url, create=create)
