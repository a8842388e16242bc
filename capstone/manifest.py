"""The file manifest: which files a pipeline has loaded, told apart by their content.

A file is identified by the SHA-256 of its bytes as stored (compressed, if it is), so the same
delivery under another name or path is recognised, and a corrected file under a known name is
not. Its row is written by the run that loaded it, in that run's transaction: a file is in the
manifest exactly when its data is in the database.
"""

import os
from datetime import UTC, datetime, timedelta
from stat import S_ISREG

from pydantic import BaseModel, ConfigDict

from capstone.errors import InputError
from capstone.inputs import STDIN, fingerprint
from capstone.sources import missing_file
from capstone.timeutil import format_ts, parse_ts

__all__ = ["FileIdentity", "LoadedFile", "identify", "mtime_text", "unchanged_since_load"]

RACY_SECONDS = 2.0
"""A file modified this close to its load may have changed again within the same timestamp
tick (2 s on FAT, a few ms on ext4) without its mtime moving: its size and mtime prove nothing."""


class FileIdentity(BaseModel):
    """An input file as found before its run: where it is, how big, and its content's hash."""

    model_config = ConfigDict(frozen=True)

    path: str
    """As given (or as a folder or glob named it)."""
    resolved_path: str
    size: int
    mtime: str
    """Modification time, UTC, as capstone writes timestamps."""
    sha256: str


class LoadedFile(FileIdentity):
    """A manifest row: a file a pipeline loaded, and the run that loaded it."""

    pipeline: str
    records: int
    run_id: int
    loaded_at: str


def mtime_text(stat: os.stat_result) -> str:
    """A file's modification time as the manifest stores it: UTC, to the microsecond (from the
    exact nanoseconds, so the same file always gives the same text)."""
    seconds, nanoseconds = divmod(stat.st_mtime_ns, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=nanoseconds // 1000)
    return format_ts(moment.replace(tzinfo=None))


def unchanged_since_load(path: str, stat: os.stat_result, loaded: LoadedFile) -> bool:
    """Whether the file at `path` is, by its stat alone, the one the manifest row `loaded`
    recorded: the same resolved path, size and modification time, and a modification time well
    before the load (see RACY_SECONDS), as make, rsync and git trust. Without hashing: a
    landing folder of thousands of files is recognised at the cost of a stat each.

    The margin runs to the end of the load, not to the stat before it: a file rewritten to the
    same size within one timestamp tick of that stat, while a long hash ran, would still pass.
    Files `watch` loads are taken only once settled, which rules that out for them; `touch -r`
    or `cp -p` over a loaded file with same-size content is the other way to fool it."""
    if os.path.realpath(path) != loaded.resolved_path or stat.st_size != loaded.size:
        return False
    if mtime_text(stat) != loaded.mtime:
        return False
    settled = parse_ts(loaded.loaded_at) - parse_ts(loaded.mtime)
    return settled.total_seconds() >= RACY_SECONDS


def identify(path: str) -> FileIdentity | None:
    """The file's identity, hashing all its bytes (at disk speed, before any parsing); None for
    standard input and other streams (a named pipe, a device), which cannot be read twice and so
    have no manifest entry: hashing one would consume what the run is to load."""
    if path == STDIN:
        return None
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise missing_file(path) from None
    except OSError as error:
        raise InputError(f"cannot read input {path}: {error.strerror}") from None
    if not S_ISREG(stat.st_mode):
        return None
    return FileIdentity(
        path=path,
        resolved_path=os.path.realpath(path),
        size=stat.st_size,
        mtime=mtime_text(stat),
        sha256=fingerprint(path),
    )
