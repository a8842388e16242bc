"""What a database path or URL names: which backend, which files, and how to show it safely."""

import re
from collections.abc import Iterable
from urllib.parse import unquote

__all__ = ["database_files", "is_keyword_value", "is_postgres", "passwords_in", "redact"]

_KEYWORD_VALUE = re.compile(r"\s*[a-z_]+\s*=")
"""The start of a libpq keyword/value string (`host=db password=...`): a keyword, then `=`."""
_PASSWORD_PARAMETER = re.compile(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s&#'\"]*)")
"""A `password=` parameter (URL query or keyword/value), its value quoted or bare."""
_USER_PASSWORD = re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^\s:/?#@\"']*:)[^\s\"'/]*(?=@)")
"""The password in a URL's user part: `scheme://user:password@` (libpq ends it at a `/`)."""

_SQLITE_COMPANIONS = ("-wal", "-shm")
"""Files SQLite keeps beside the database in WAL mode; writing over one corrupts the database."""


def is_postgres(url: str) -> bool:
    """Whether `url` names a PostgreSQL database rather than a SQLite file."""
    return url.startswith(("postgresql://", "postgres://"))


def is_keyword_value(url: str) -> bool:
    """Whether `url` reads as a libpq keyword/value string rather than a file path or a URL."""
    return _KEYWORD_VALUE.match(url) is not None


def passwords_in(text: str) -> list[str]:
    """The passwords `text` spells in a URL's user part or a `password=` parameter, as written
    and percent-decoded: what a driver message quoting the text could show."""
    found: set[str] = set()
    for match in _PASSWORD_PARAMETER.finditer(text):
        value = match.group(2)
        found.update((value, value.strip("'"), unquote(value)))
    for match in _USER_PASSWORD.finditer(text):
        value = text[match.end(1) : match.end()]
        found.update((value, unquote(value)))
    return sorted((s for s in found if s), key=len, reverse=True)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every password hidden as ***: the `secrets` given, any `password=` parameter
    and any URL's user-part password, whether or not the URL around it parses."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    text = _PASSWORD_PARAMETER.sub(_hidden, text)
    return _USER_PASSWORD.sub(_hidden, text)


def _hidden(match: re.Match[str]) -> str:
    # The placeholder in a hint (`postgresql://user:password@host`) is no secret: kept readable.
    if match.group(0)[len(match.group(1)) :].lower() in ("", "password", "***"):
        return match.group(0)
    return match.group(1) + "***"


def database_files(url: str) -> tuple[str, ...]:
    """The files the database at `url` consists of (none for PostgreSQL), existing or not."""
    if is_postgres(url):
        return ()
    return (url, *(url + suffix for suffix in _SQLITE_COMPANIONS))
