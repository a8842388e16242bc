"""Helpers for PostgreSQL tests: a throwaway server per session, one schema per test.

`throwaway_server` starts the server the tests use when CAPSTONE_TEST_PG_URL is not set. It is
our own rather than pytest-postgresql's `postgresql_proc`, which was tried first: that factory
runs `pg_ctl initdb` as the current user, and the tests run as root (here and in CI), which
initdb and pg_ctl refuse; pytest-postgresql 10 has no setting for another OS user. It also sets
up trust authentication only, while the tests of a wrong password need a password check. Here
initdb and postgres run as the `postgres` OS user when we are root, and postgres runs as our child
(not detached by pg_ctl) so that util-linux's setpriv can have it stopped when the test session
dies, even by `kill -9`; the next session then removes the folder left behind.
"""

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

if TYPE_CHECKING:
    import psycopg

PREFIX = "capstone-pg-"  # the throwaway servers' folders in the temporary directory
HBA = "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"


def server_bin_dir() -> Path | None:
    """The folder with initdb and postgres: initdb's on PATH, else Debian's newest version's."""
    found = shutil.which("initdb")
    debian = Path("/usr/lib/postgresql").glob("*/bin")
    newest_first = sorted(debian, key=lambda bin_dir: _version(bin_dir.parent.name), reverse=True)
    for bin_dir in [Path(found).resolve().parent] if found else newest_first:
        if (bin_dir / "initdb").is_file() and (bin_dir / "postgres").is_file():
            return bin_dir
    return None


@contextlib.contextmanager
def throwaway_server(bin_dir: Path) -> Iterator[str]:
    """Start PostgreSQL in a new temporary folder, listening on a free port of 127.0.0.1, and yield
    the URL of its database `capstone_test` (role `capstone`, scram-sha-256 password); stop the
    server and remove the folder afterwards."""
    _remove_abandoned()
    root = Path(tempfile.mkdtemp(prefix=PREFIX))
    (root / "owner").write_text(str(os.getpid()))
    (root / "pg_hba.conf").write_text(HBA)
    account = _server_account()
    if account:
        os.chown(root, account["user"], account["group"])
    server: subprocess.Popen[bytes] | None = None
    try:
        initdb = [str(bin_dir / "initdb"), "-D", str(root / "data"), "-U", "postgres"]
        # C.UTF-8, like the Debian cluster the tests were first run against; pg_hba.conf is ours
        options = ["-E", "UTF8", "--locale=C.UTF-8", "--auth=trust", "--no-sync"]
        made = subprocess.run(
            [*initdb, *options], capture_output=True, check=False, cwd=root, **account
        )
        if made.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{made.stderr.decode(errors='replace')}")
        for _ in range(3):  # another process may take the free port before postgres binds it
            port = _free_port()
            server = _start(bin_dir, root, port, account)
            if (conn := _connect_when_up(server, root, port)) is not None:
                break
        else:
            raise RuntimeError(f"PostgreSQL did not start:\n{(root / 'server.log').read_text()}")
        password = secrets.token_hex(12)
        with conn:
            conn.execute(f"CREATE ROLE capstone LOGIN PASSWORD '{password}'")  # hex: no quoting
            conn.execute("CREATE DATABASE capstone_test OWNER capstone")
        yield f"postgresql://capstone:{password}@127.0.0.1:{port}/capstone_test"
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)  # fast shutdown: ends open sessions too
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(root, ignore_errors=True)


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


def _start(
    bin_dir: Path, root: Path, port: int, account: dict[str, Any]
) -> subprocess.Popen[bytes]:
    settings = {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "unix_socket_directories": str(root),
        "hba_file": str(root / "pg_hba.conf"),
        "fsync": "off",  # a throwaway server: nothing needs to survive a crash of the machine
        "full_page_writes": "off",
        "synchronous_commit": "off",
    }
    # setpriv (util-linux) has the server sent SIGINT, a fast shutdown, if the test session dies
    setpriv = shutil.which("setpriv")
    command = [setpriv, "--pdeathsig", "INT", "--"] if setpriv else []
    command += [str(bin_dir / "postgres"), "-D", str(root / "data")]
    command += [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]
    with (root / "server.log").open("ab") as log:
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
            process_group=0,  # Ctrl-C reaches pytest only, whose teardown stops the server
            **account,
        )


def _connect_when_up(
    server: subprocess.Popen[bytes], root: Path, port: int
) -> "psycopg.Connection[Any] | None":
    """A superuser connection over the socket once the server accepts one; None if it exited."""
    import psycopg

    deadline = time.monotonic() + 60
    while server.poll() is None:
        try:
            return psycopg.connect(host=str(root), port=port, user="postgres", autocommit=True)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    return None


def _server_account() -> dict[str, Any]:
    """subprocess arguments that drop root, which initdb and postgres refuse to run as."""
    if os.geteuid() != 0:
        return {}
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError(
            "running as root, PostgreSQL needs an OS user to run as: create the user 'postgres' "
            "(the Debian package does), or set CAPSTONE_TEST_PG_URL"
        ) from None
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _remove_abandoned() -> None:
    """Remove the folders of earlier sessions that were killed before their teardown could."""
    for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        with contextlib.suppress(OSError, ValueError):  # not ours to read, or not written yet
            pids = [int((folder / "owner").read_text())]
            if (postmaster := folder / "data" / "postmaster.pid").exists():
                pids.append(int(postmaster.read_text().split()[0]))
            if not any(_alive(pid) for pid in pids):
                shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())
