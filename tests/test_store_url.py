"""What a --db value names: the backend, and the files a SQLite database consists of."""

from capstone.store import database_files, is_postgres
from capstone.store.url import is_keyword_value, passwords_in, redact


class TestDatabaseFiles:
    def test_a_sqlite_database_is_its_file_and_its_wal_files(self) -> None:
        """A SQLite path names the file and the -wal and -shm files beside it."""
        assert database_files("data/x.db") == ("data/x.db", "data/x.db-wal", "data/x.db-shm")

    def test_a_postgresql_database_has_no_files(self) -> None:
        """Both PostgreSQL URL schemes name a server, not files."""
        for url in ("postgresql://u@h/db", "postgres://u@h/db"):
            assert is_postgres(url)
            assert database_files(url) == ()


class TestRedact:
    def test_password_parameter_of_a_url_that_does_not_parse_is_hidden(self) -> None:
        """libpq quotes a URL it cannot parse; its password= value shows as ***."""
        text = 'in URI: "postgresql://u@[::1/db?password=Hunter2-Zq9x")'
        assert redact(text) == 'in URI: "postgresql://u@[::1/db?password=***")'

    def test_user_part_password_is_hidden(self) -> None:
        """scheme://user:password@ shows as user:***@, the rest of the URL kept."""
        assert redact("postgresql://me:s3cr%40t@db:5432/x") == "postgresql://me:***@db:5432/x"

    def test_quoted_keyword_value_password_is_hidden(self) -> None:
        """A quoted password in a keyword/value string is hidden whole, spaces and all."""
        assert redact("host=x password='a b\\' c' dbname=y") == "host=x password=*** dbname=y"

    def test_known_secrets_are_hidden_wherever_they_appear(self) -> None:
        """A secret the caller knows is hidden even outside any URL."""
        assert redact("bad value s3cret near here", ["s3cret"]) == "bad value *** near here"

    def test_placeholders_and_plain_urls_stay(self) -> None:
        """The hint's user:password@ and a URL without a password are left as written."""
        for text in ("use postgresql://user:password@host:5432/db", "postgresql://h:5432/d?x=a@b"):
            assert redact(text) == text

    def test_passwords_in_lists_every_spelling(self) -> None:
        """As written and percent-decoded, so a message quoting either is caught."""
        assert set(passwords_in("postgresql://u:p%40ss@h/d?password=x%21")) >= {
            "p%40ss",
            "p@ss",
            "x%21",
            "x!",
        }


class TestKeywordValue:
    def test_libpq_keyword_value_strings_are_recognised(self) -> None:
        """`host=... password=...` is a keyword/value string, not a file path."""
        assert is_keyword_value("host=localhost password=x dbname=y")
        assert is_keyword_value(" dbname = y")

    def test_paths_and_urls_are_not(self) -> None:
        """Paths (a ./ prefix included) and URLs are not keyword/value strings."""
        for url in ("capstone.db", "./host=x.db", "data/a=b.db", "postgresql://u@h/d"):
            assert not is_keyword_value(url)
