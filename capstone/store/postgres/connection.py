"""Connecting to PostgreSQL: URLs shown without their password, driver errors as one line."""

import contextlib
import re
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from capstone.errors import LockError, StoreError
from capstone.store.url import passwords_in, redact

__all__ = ["Connection", "connect", "redact_url", "secrets_of", "store_error"]

Connection = psycopg.Connection[dict[str, Any]]

_START_SERVER = (
    "start the server (for example `pg_ctlcluster 15 main start`, or "
    "`docker run -e POSTGRES_PASSWORD=... -p 5432:5432 postgres`) or check host and port in --db"
)


def redact_url(url: str) -> str:
    """The URL with its password (in the user part or a `password=` parameter) replaced by ***.

    Text, not a parsed URL: a URL that does not parse is still shown, with its password hidden.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    query = rest.find("?")
    authority = rest if query == -1 else rest[:query]
    at = authority.rfind("@")
    in_user_part = at != -1 and ":" in authority[:at]
    if in_user_part:
        rest = f"{authority[:at].partition(':')[0]}:***{rest[at:]}"
    rest, in_parameter = re.subn(r"(?i)([?&]password=)[^&#]*", r"\1***", rest)
    if not (in_user_part or in_parameter):  # a URL libpq reads differently than the split above
        for secret in secrets_of(url):
            if len(secret) >= 4:
                rest = rest.replace(secret, "***")
    return f"{scheme}{separator}{rest}"


def secrets_of(url: str) -> list[str]:
    """Every spelling of the URL's password that could show up in a driver message."""
    found = set(passwords_in(url))
    authority = url.partition("://")[2].partition("?")[0]
    userinfo, at, _ = authority.rpartition("@")
    if at and ":" in userinfo:
        found.add(userinfo.partition(":")[2])
    with contextlib.suppress(psycopg.Error):
        found.add(str(conninfo_to_dict(url).get("password") or ""))
    for secret in list(found):
        found.update(piece for piece in secret.split("@") if len(piece) >= 3)
    return sorted((s for s in found if s), key=len, reverse=True)


def _one_line(error: BaseException, secrets: Sequence[str]) -> str:
    """A driver error as one line, every password hidden (libpq's parse errors quote the URL)."""
    return redact(" ".join(str(error).split()), secrets)


def connect(url: str, shown: str, secrets: Sequence[str]) -> Connection:
    """An autocommit connection returning rows as dicts; `shown` is the URL as messages name it."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as error:
        raise StoreError(
            f"--db {shown} is not a valid PostgreSQL URL ({_one_line(error, secrets)}); use "
            "postgresql://user:password@host:5432/dbname"
        ) from None
    defaults = {"connect_timeout": "10", "application_name": "capstone"}
    conninfo = make_conninfo(
        url, **{name: value for name, value in defaults.items() if name not in params}
    )
    try:
        return psycopg.connect(conninfo, autocommit=True, row_factory=dict_row)
    except psycopg.Error as error:
        raise _connect_error(_one_line(error, secrets), shown, params) from None


def _connect_error(text: str, where: str, params: dict[str, Any]) -> StoreError:
    user, dbname = params.get("user") or "(default)", params.get("dbname") or "(default)"
    if "password authentication failed" in text or "no password supplied" in text:
        return StoreError(
            f"PostgreSQL at {where} refused the password of user {user!r}; check the user and "
            "password in --db (or PGPASSWORD, ~/.pgpass)"
        )
    if re.search(r'database "[^"]*" does not exist', text):
        return StoreError(
            f"database {dbname!r} does not exist on the server of {where}; create it "
            f"(`createdb {dbname}`) or fix the database name in --db"
        )
    if re.search(r'role "[^"]*" does not exist', text):
        return StoreError(
            f"PostgreSQL at {where} has no user {user!r}; create the role or fix the user in --db"
        )
    if "pg_hba.conf" in text:
        return StoreError(
            f"PostgreSQL at {where} does not accept this client (pg_hba.conf); ask its "
            "administrator to allow it, or connect as another user"
        )
    if "failed to resolve host" in text or "could not translate host name" in text:
        return StoreError(f"cannot resolve the host of {where}; check the host name in --db")
    if "timeout expired" in text:
        return StoreError(
            f"connecting to PostgreSQL at {where} timed out; check that the server is up and "
            "reachable (firewall, host, port in --db)"
        )
    if "the database system is starting up" in text or "shutting down" in text:
        return StoreError(
            f"PostgreSQL at {where} is starting up or shutting down; wait and run again"
        )
    if "Connection refused" in text or "No such file or directory" in text:
        return StoreError(
            f"cannot connect to PostgreSQL at {where}: no server is listening; " + _START_SERVER
        )
    return StoreError(
        f"cannot connect to PostgreSQL at {where} ({text}); check that the server is running "
        "and the URL in --db"
    )


def store_error(
    error: Exception, where: str, secrets: Sequence[str], schema: str, closed: bool
) -> StoreError:
    """A one-line StoreError for a driver error, naming the fix where there is a known one."""
    text = _one_line(error, secrets)
    if isinstance(error, errors.LockNotAvailable):
        return LockError(f"PostgreSQL at {where}: {text}; wait or raise --lock-timeout")
    if isinstance(error, errors.DeadlockDetected | errors.SerializationFailure):
        return StoreError(
            f"another run writing the same keys got in the way ({text}); run again, nothing "
            "was changed"
        )
    if isinstance(error, errors.DiskFull | errors.OutOfMemory):
        return StoreError(
            f"PostgreSQL at {where} ran out of space ({text}); free disk space and run again, "
            "nothing was changed"
        )
    if isinstance(error, errors.InsufficientPrivilege):
        return StoreError(
            f"PostgreSQL at {where}: {text}; grant this user CREATE and USAGE on the schema "
            f"{schema!r} and its tables, or use another user in --db"
        )
    if isinstance(error, errors.ReadOnlySqlTransaction):
        return StoreError(
            f"PostgreSQL at {where} is read-only (a standby?); point --db at the primary"
        )
    if isinstance(error, errors.QueryCanceled):
        return StoreError(
            f"PostgreSQL at {where} cancelled a statement ({text}); raise statement_timeout "
            "for this user or run again"
        )
    if isinstance(error, errors.ProgramLimitExceeded):
        return StoreError(
            f"PostgreSQL at {where} refused a value as too large ({text}); nothing was "
            "changed. Report it: capstone should have dead-lettered that record"
        )
    if (
        closed
        or isinstance(error, errors.ConnectionException)
        or (isinstance(error, psycopg.OperationalError) and error.sqlstate is None)
    ):
        return StoreError(
            f"lost the connection to PostgreSQL at {where} ({text}); check that the server is "
            "running and run again, nothing was changed"
        )
    return StoreError(f"PostgreSQL at {where}: {text}")
