"""What a --db value names: the backend, and the files a SQLite database consists of."""

from capstone.store import database_files, is_postgres


class TestDatabaseFiles:
    def test_a_sqlite_database_is_its_file_and_its_wal_files(self) -> None:
        """A SQLite path names the file and the -wal and -shm files beside it."""
        assert database_files("data/x.db") == ("data/x.db", "data/x.db-wal", "data/x.db-shm")

    def test_a_postgresql_database_has_no_files(self) -> None:
        """Both PostgreSQL URL schemes name a server, not files."""
        for url in ("postgresql://u@h/db", "postgres://u@h/db"):
            assert is_postgres(url)
            assert database_files(url) == ()
