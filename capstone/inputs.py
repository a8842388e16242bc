"""Which files a run reads: `--input` values (files, `-`, folders, globs) turned into one ordered
list with each file once, and the fingerprint that tells a file's content apart from its name.

Order is stable so reruns read files in the same order: the values as given, and inside each
folder or glob the files in name order (path component by component, so `day-1/b` comes before
`day-1x`). A file named twice (by two globs, or by `./a` and `a`) is kept at its first place.
"""

import glob
import hashlib
import os
import re
from collections.abc import Iterable

from capstone.errors import ConfigError, InputError
from capstone.sources import missing_file

__all__ = [
    "STDIN",
    "UNFINISHED_SUFFIXES",
    "expand_inputs",
    "fingerprint",
    "is_skipped",
    "names_many",
]

STDIN = "-"
UNFINISHED_SUFFIXES = (".tmp", ".part", "~")
"""Names of files still being written (downloads, editors' backups): never read from a folder
or a glob."""

_GLOB_MAGIC = re.compile(r"[*?[]")
_SKIPPED = "hidden names and names ending in .tmp, .part or ~ are skipped"


def is_skipped(name: str) -> bool:
    """Whether a folder's entry of this name is left out: hidden, or a file still being written."""
    return name.startswith(".") or name.endswith(UNFINISHED_SUFFIXES)


def names_many(value: str) -> bool:
    """Whether an input value is a folder or a glob (files in any number, one run each), as
    `expand_inputs` reads it, rather than one file or `-`; told without listing any file."""
    if value == STDIN or (os.path.lexists(value) and not os.path.isdir(value)):
        return False
    return os.path.isdir(value) or _GLOB_MAGIC.search(value) is not None


def expand_inputs(values: Iterable[str]) -> list[str]:
    """The files `values` name, in order, each once (by resolved path); `-` stays `-` (stdin).

    A value that exists is a file (taken as is, even when its name holds `*`) or a folder (its
    regular files at any depth, not following links to folders); otherwise a value with `*`, `?`
    or `[` is a glob (`**` matches any depth; a folder it matches gives its files). A folder or
    glob that gives no file raises ConfigError naming it; a missing plain file raises InputError.
    """
    files: list[str] = []
    seen: set[str] = set()
    for value in values:
        for path in _expand(value):
            identity = path if path == STDIN else os.path.realpath(path)
            if identity not in seen:
                seen.add(identity)
                files.append(path)
    return files


def fingerprint(path: str) -> str:
    """SHA-256 (hex) of the file's bytes as stored (compressed, if it is), read in chunks so
    memory stays flat; the same content under any name or path gives the same fingerprint."""
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except FileNotFoundError:
        raise missing_file(path) from None
    except OSError as error:
        raise InputError(f"cannot read input {path}: {error.strerror}") from None


def _expand(value: str) -> list[str]:
    if value == STDIN:
        return [STDIN]
    if os.path.isdir(value):
        found = _folder_files(value)
        if not found:
            raise ConfigError(f"--input {value}: the folder holds no file to load ({_SKIPPED})")
        return found
    if os.path.lexists(value):
        return [value]
    if _GLOB_MAGIC.search(value) is None:
        raise missing_file(value)
    found = []
    for match in glob.glob(value, recursive=True):  # hidden names only where the pattern has a dot
        if os.path.isdir(match):
            found.extend(_folder_files(match))
        elif os.path.isfile(match) and not match.endswith(UNFINISHED_SUFFIXES):
            found.append(match)
    if not found:
        raise ConfigError(
            f"--input {value!r} matches no file ({_SKIPPED}); check the pattern, and quote it so the shell leaves it to capstone"
        )
    return sorted(set(found), key=_name_order)


def _folder_files(folder: str) -> list[str]:
    """The folder's regular files at any depth, skipping hidden and unfinished names."""
    found: list[str] = []

    def unreadable(error: OSError) -> None:
        raise InputError(f"cannot read folder {error.filename}: {error.strerror}")

    for root, folders, names in os.walk(folder, onerror=unreadable):
        folders[:] = [name for name in folders if not is_skipped(name)]
        paths = (os.path.join(root, name) for name in names if not is_skipped(name))
        found.extend(path for path in paths if os.path.isfile(path))
    return sorted(found, key=_name_order)


def _name_order(path: str) -> list[str]:
    return os.path.normpath(path).split(os.sep)
