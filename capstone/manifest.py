"""The file manifest: which files a pipeline has loaded, told apart by their content.

A file is identified by the SHA-256 of its bytes as stored (compressed, if it is), so the same
delivery under another name or path is recognised, and a corrected file under a known name is
not. Its row is written by the run that loaded it, in that run's transaction: a file is in the
manifest exactly when its data is in the database.
"""

import os
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

from capstone.errors import InputError
from capstone.inputs import STDIN, fingerprint
from capstone.sources import missing_file
from capstone.timeutil import format_ts

__all__ = ["FileIdentity", "LoadedFile", "identify"]


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


def identify(path: str) -> FileIdentity | None:
    """The file's identity, hashing all its bytes (at disk speed, before any parsing); None for
    standard input, which cannot be read twice and so has no manifest entry."""
    if path == STDIN:
        return None
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise missing_file(path) from None
    except OSError as error:
        raise InputError(f"cannot read input {path}: {error.strerror}") from None
    return FileIdentity(
        path=path,
        resolved_path=os.path.realpath(path),
        size=stat.st_size,
        mtime=format_ts(datetime.fromtimestamp(stat.st_mtime, UTC).replace(tzinfo=None)),
        sha256=fingerprint(path),
    )
