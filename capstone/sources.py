"""Reading sources: JSON arrays, JSON Lines and CSV, streamed record by record.

A file may be gzip, bzip2, xz or zstd compressed whatever its name (see `capstone.compression`):
its format is then told from the decompressed content, or from the name under the compression
suffix (`x.jsonl.gz` is JSON Lines).

Every reader yields `(position, raw, parsed)` tuples in input order. `position` is the line number
(1-based) for JSON Lines and CSV and the element index (0-based) for a JSON array; `raw` is the
record's text as it stood in the file; `parsed` is a dict, or a `Malformed` when the record is not a
JSON object (kept so it can be dead-lettered, not lost).
"""

import csv
import hashlib
import io
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, cast

import orjson

from capstone._jsonarray import MAX_RECORD_BYTES, TooLarge, array_elements
from capstone.compression import (
    SNIFF_BYTES,
    SUFFIXES,
    Compression,
    check_text,
    decompressed,
    detect,
)
from capstone.errors import InputError
from capstone.jsontext import loads_exact

__all__ = [
    "FORMATS",
    "JSON_FAILURES",
    "WRONG_COLUMNS",
    "Format",
    "HeaderCheck",
    "Item",
    "Malformed",
    "SourceFile",
    "missing_file",
    "parse_object",
]

Format = Literal["json", "jsonl", "csv", "parquet"]
FORMATS: tuple[Format, ...] = ("json", "jsonl", "csv", "parquet")
_PARQUET_MAGIC = b"PAR1"
_BOM = b"\xef\xbb\xbf"


WRONG_COLUMNS = "malformed.columns"
"""The reason for a CSV row with more or fewer cells than the header: it has no JSON form."""


HeaderCheck = Callable[[str, list[str], str, str], None]
"""Checks a CSV header: the file's name, the header's cells, its text as read, and the
delimiter that split it."""


class Malformed(NamedTuple):
    """A record that could not be parsed into a JSON object, with the reason."""

    code: str
    message: str
    letter: int | None = None
    """In a replay of stored dead letters, the letter it is: refreshed by id, not by its text."""


JSON_FAILURES = frozenset({"malformed.json", "malformed.encoding", "malformed.not_object"})
"""Reasons of text that is no JSON object; its dead letter exports as `_raw` text to fix."""

Item = tuple[int, bytes | str, Any]
"""(position, raw text, parsed): parsed is a dict, a Malformed, or None when raw is JSON text
left for the validator to parse in one pass (see `parse_object` for the fallback)."""


def parse_object(raw: bytes | str) -> dict[str, Any] | Malformed:
    """Parse one record's JSON text; anything but a JSON object is Malformed."""
    try:
        parsed = loads_exact(raw)
    except orjson.JSONDecodeError as error:
        if isinstance(raw, bytes):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as bad:
                return Malformed(
                    "malformed.encoding",
                    f"line is not UTF-8 (byte 0x{raw[bad.start]:02x} at column {bad.start + 1}); "
                    "the raw text keeps it as \\x escapes",
                )
        return Malformed("malformed.json", f"line is not valid JSON: {error}")
    if type(parsed) is not dict:
        return Malformed("malformed.not_object", "line is not a JSON object")
    return parsed


def missing_file(path: str) -> InputError:
    """The error for an input path that does not exist."""
    return InputError(f"input file {path} does not exist; check the --input path")


@dataclass
class SourceFile:
    """An input file (or standard input, as `-`) opened for streaming; use it as a context manager."""

    path: str
    format: Format | None = None
    delimiter: str | None = None
    """The CSV delimiter; None: a tab for a `.tsv` name, else a comma."""
    check_header: "HeaderCheck | None" = None
    """Called with a CSV file's header cells and its text before any row is read."""
    max_record_bytes: int = MAX_RECORD_BYTES
    """The size cap of one record (a line, a row, an element): beyond it the file fails,
    found before the record is held whole where the format allows."""
    compression: Compression | None = field(default=None, init=False)
    """How the content is compressed (told from its first bytes when opened), None when plain."""
    _fh: io.BufferedReader | None = field(default=None, init=False)  # the (decompressed) content
    _file: io.BufferedReader | None = field(default=None, init=False)  # the file, never stdin
    _hashing: "_Hashing | None" = field(default=None, init=False)  # under _file
    _read_elsewhere: tuple[str, int] | None = field(default=None, init=False)

    @property
    def name(self) -> str:
        return "<stdin>" if self.path == "-" else self.path

    @property
    def size(self) -> int | None:
        """Bytes in the file (compressed, if it is), or None for standard input."""
        return None if self.path == "-" else os.path.getsize(self.path)

    def bytes_read(self) -> int:
        """How far the reader has got in the file's bytes (compressed, if it is), for progress
        display; 0 for standard input."""
        if self._file is None:
            return 0
        try:
            return self._file.tell()
        except (OSError, ValueError):
            return 0

    def content_read(self) -> tuple[str, int] | None:
        """SHA-256 (hex) and size of the file's bytes as this source read them (compressed, if
        the file is), or None for standard input or when the file was not read in one pass."""
        if self._read_elsewhere is not None:
            return self._read_elsewhere
        return None if self._hashing is None else self._hashing.content()

    def read_elsewhere(self, content: tuple[str, int] | None) -> None:
        """Take `content_read` from the copy of this source another process read (see
        `capstone.readahead`): this one's file was never read past its head."""
        self._read_elsewhere = content

    def __enter__(self) -> "SourceFile":
        """Open the file, undo its compression and settle its format (`format`, if not given, is
        detected here); InputError if it cannot be read or is not text."""
        if self.path == "-":
            fh = cast(io.BufferedReader, sys.stdin.buffer)
        else:
            try:
                self._hashing = _Hashing(open(self.path, "rb", buffering=0))
                fh = self._file = io.BufferedReader(self._hashing)
            except FileNotFoundError:
                raise missing_file(self.path) from None
            except IsADirectoryError:
                raise InputError(f"input {self.path} is a folder; pass a file to --input") from None
            except OSError as error:
                raise InputError(f"cannot open input {self.path}: {error.strerror}") from None
        if not isinstance(fh, io.BufferedReader):  # stdin replaced, as under a test runner
            fh = io.BufferedReader(cast(io.RawIOBase, fh))
        try:
            self._fh = self._content(fh)
        except OSError as error:
            self.__exit__()
            raise InputError(f"reading {self.name} failed: {error.strerror or error}") from None
        except BaseException:
            self.__exit__()
            raise
        return self

    def _content(self, fh: io.BufferedReader) -> io.BufferedReader:
        """The file's text as a stream at its first record, once compression and format are known."""
        fh, head = _first_bytes(fh)
        self.compression = detect(head)
        if self.compression is not None:
            fh, head = _first_bytes(decompressed(fh, self.compression, self.name))
        if self.format == "parquet" or (
            head.startswith(_PARQUET_MAGIC) and (self.format is None or self._parquet_footer())
        ):
            return self._parquet(fh, head)
        check_text(head, self.name, self.compression)
        if fh.peek(3)[:3] == _BOM:
            fh.read(3)
        self.format = self.format or _named_format(self.path)
        if self.format is None:
            fh, head = _look_ahead(fh, bytes.strip)
            self.format = _detect(head)
        return fh

    def _parquet_footer(self) -> bool:
        """Whether the file also ends as Parquet does: text that merely starts with PAR1, read
        with an explicit --format, is read as that format."""
        if self.path == "-" or self.compression is not None:
            return True
        with open(self.path, "rb") as whole:
            whole.seek(0, os.SEEK_END)
            if whole.tell() < 8:
                return False
            whole.seek(-4, os.SEEK_END)
            return whole.read(4) == _PARQUET_MAGIC

    def _parquet(self, fh: io.BufferedReader, head: bytes) -> io.BufferedReader:
        """A Parquet file is read by pyarrow from its path (its index is at the end); here it is
        only recognised, and hashed in one pass for the manifest."""
        if not head.startswith(_PARQUET_MAGIC):
            raise InputError(f"{self.name} is not a Parquet file (it does not start with PAR1)")
        if self.format not in (None, "parquet"):
            raise InputError(
                f"{self.name} is a Parquet file, not {self.format}; leave out --format"
            )
        if self.path == "-" or self.compression is not None:
            where = "on standard input" if self.path == "-" else f"{self.compression}-compressed"
            raise InputError(
                f"{self.name} is Parquet {where}; capstone reads Parquet from a plain file, "
                "which it must seek in (Parquet compresses its own pages): save it as a file "
                "and pass its path"
            )
        self.format = "parquet"
        while fh.read(1 << 20):
            pass
        return fh

    def __exit__(self, *exc: object) -> None:
        if self.compression is not None and self._fh is not None:
            self._fh.close()  # the decompressor; the file under it closes next
        if self._file is not None:
            self._file.close()
        self._fh = self._file = None

    def head(self, size: int = 65_536) -> bytes:
        """Up to `size` first bytes of the content (decompressed), without consuming them; none
        for Parquet, which is not text."""
        assert isinstance(self._fh, io.BufferedReader), "use SourceFile as a context manager"
        if self.format == "parquet":
            return b""
        return self._fh.peek(size)[:size]

    def records(self) -> Iterator[Item]:
        """Yield every record of the file in order; raises InputError if the file cannot be read."""
        assert isinstance(self._fh, io.BufferedReader), "use SourceFile as a context manager"
        fh, fmt = self._fh, self.format
        try:
            limit = self.max_record_bytes
            if fmt == "json":
                yield from _json_array(fh, self.name, limit)
            elif fmt == "jsonl":
                yield from _json_lines(fh, self.name, limit)
            elif fmt == "parquet":
                from capstone.parquet import parquet_rows

                yield from parquet_rows(self.path, self.name, limit)
            else:
                delimiter = self.delimiter or ("\t" if _named_tsv(self.path) else ",")
                yield from _csv_rows(fh, self.name, delimiter, self.check_header, limit)
        except OSError as error:
            raise InputError(f"reading {self.name} failed: {error.strerror or error}") from None


class _Hashing(io.RawIOBase):
    """A file's bytes, hashed as they are read.

    The manifest's SHA-256 is taken from the very bytes the load parsed, not from an earlier pass
    over the file: a file appended to or rewritten between the two would otherwise be recorded
    under a hash of content that was never loaded, and its appended records skipped as known on
    the next run. Hashing what was read (rather than failing a file whose size or mtime moved)
    keeps a file caught mid-write loadable: what was read is loaded and recorded, and the rest
    is a changed file for the next run."""

    def __init__(self, raw: io.FileIO) -> None:
        self._raw = raw
        self._digest = hashlib.sha256()
        self._size = 0
        self._whole = True  # False once a seek broke the single pass from the start

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._raw.seekable()

    def tell(self) -> int:
        return self._raw.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        position = self._raw.seek(offset, whence)
        if position == 0:  # read again from the start (a decompressor, an error's line search)
            self._digest, self._size, self._whole = hashlib.sha256(), 0, True
        elif position != self._size:
            self._whole = False
        return position

    def readinto(self, buffer: Any) -> int:
        count = self._raw.readinto(buffer)
        if count:
            self._digest.update(memoryview(buffer)[:count])
            self._size += count
        return count or 0

    def close(self) -> None:
        self._raw.close()
        super().close()

    def content(self) -> tuple[str, int] | None:
        return (self._digest.hexdigest(), self._size) if self._whole else None


_SUFFIX_FORMATS: dict[str, Format] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "csv",
}
"""Extensions that say the format outright; anything else (.json, .txt, stdin) is sniffed."""


def _named_tsv(path: str) -> bool:
    stem, suffix = os.path.splitext(path.lower())
    if suffix in SUFFIXES:
        suffix = os.path.splitext(stem)[1]
    return suffix == ".tsv"


def _named_format(path: str) -> Format | None:
    """The format the file's name says, looking under a compression suffix (`x.csv.zst`)."""
    stem, suffix = os.path.splitext(path)
    if suffix.lower() in SUFFIXES:
        suffix = os.path.splitext(stem)[1]
    return _SUFFIX_FORMATS.get(suffix.lower())


class _Prefixed(io.RawIOBase):
    """Bytes already read from a stream, then the rest of the stream."""

    def __init__(self, prefix: bytes, rest: io.BufferedReader) -> None:
        self._prefix = prefix
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._prefix:
            return self._rest.readinto1(buffer)
        taken = self._prefix[: len(buffer)]
        buffer[: len(taken)] = taken
        self._prefix = self._prefix[len(taken) :]
        return len(taken)


def _first_bytes(fh: io.BufferedReader) -> tuple[io.BufferedReader, bytes]:
    """Enough first bytes to tell compression and binary formats apart, and a reader still at the
    start: a file's peek holds them (or all of a shorter file); a pipe may need more reads."""
    if fh.seekable():
        return fh, fh.peek(SNIFF_BYTES)
    return _look_ahead(fh, lambda head: len(head) >= SNIFF_BYTES)


def _look_ahead(
    fh: io.BufferedReader, enough: Callable[[bytes], object]
) -> tuple[io.BufferedReader, bytes]:
    """The input's first bytes, `enough` of them (or all there are), and a reader that still
    starts at the beginning. A pipe may deliver a lone newline or a byte or two first, and a
    format guessed from that would be a coin toss."""
    head = fh.peek(4096)
    if enough(head) or not head:
        return fh, head
    taken = b""
    while chunk := fh.read1(4096):
        taken += chunk
        if enough(taken):
            break
    return io.BufferedReader(_Prefixed(taken, fh)), taken


def _detect(head: bytes) -> Format:
    head = head.lstrip()
    if head.startswith(b"["):
        return "json"
    if head.startswith(b"{") or not head:
        return "jsonl"
    return "csv"


def _json_lines(fh: io.BufferedReader, name: str, limit: int) -> Iterator[Item]:
    # readline(limit + 1): a line longer than the cap is found before it is held whole.
    for number, line in enumerate(iter(lambda: fh.readline(limit + 1), b""), 1):
        if len(line) > limit and not line.endswith(b"\n"):
            raise TooLarge(name, f"line {number}", limit)
        if number == 1 and line.strip() == b"{":
            raise InputError(
                f"{name} holds one pretty-printed JSON object; capstone reads a JSON array of "
                "objects, JSON Lines (one object per line) or CSV"
            )
        if number == 1 and line.strip() == b"[":
            # Read as JSON Lines, a pretty-printed array loads its one-line elements and rejects
            # the rest: a success that hides a wrong format. (A first line that is a whole array
            # is a record like any other, and rejected: not an object.)
            raise InputError(
                f"{name} holds a pretty-printed JSON array, not one JSON object per line; pass "
                "--format json (or name the file .json) to read it as one array"
            )
        if number == 1 and (split := _csv_header(line)):
            # Every line would be a dead letter: a success that hides a wrong format.
            raise InputError(
                f"{name} was read as JSON Lines, but its first line is a CSV header "
                f"({split}); pass --format csv (or name the file .csv)"
            )
        text = line.rstrip(b"\r\n")
        if text.strip():
            yield number, text, None


_HEADER_CELL = re.compile(r'\s*"?[A-Za-z_][A-Za-z0-9_ .\-]*"?\s*')


def _csv_header(line: bytes) -> str:
    """How `line` splits as a CSV header of two or more plain column names ('' if it does not):
    no JSON line does, whole or broken, since names carry no braces, colons or inner quotes."""
    text = line.decode("utf-8", "replace").strip()
    for delimiter in (",", ";", "\t", "|"):
        cells = text.split(delimiter)
        if len(cells) >= 2 and all(_HEADER_CELL.fullmatch(cell) for cell in cells):
            shown = "tab" if delimiter == "\t" else repr(delimiter)
            return f"{len(cells)} columns split by {shown}"
    return ""


def _json_array(fh: io.BufferedReader, name: str, limit: int) -> Iterator[Item]:
    # Raw text only: the validator parses it in one pass, exactly as for JSON Lines.
    for index, raw in array_elements(fh, name, limit):
        yield index, raw, None


class _LineTap:
    """Feeds the csv module lines, remembering those it consumed for the current row; a row
    longer than `limit` characters raises TooLarge before it is held whole."""

    def __init__(self, text: io.TextIOWrapper, name: str, limit: int) -> None:
        self._text = text
        self._name = name
        self._limit = limit
        self._size = 0
        self.taken: list[str] = []
        self.line_number = 0

    def __iter__(self) -> "_LineTap":
        return self

    def __next__(self) -> str:
        line = self._text.readline(self._limit + 1 - self._size)
        if not line:
            raise StopIteration
        self.taken.append(line)
        self.line_number += 1
        self._size += len(line)
        if self._size > self._limit and not (self._size == self._limit + 1 and line[-1] == "\n"):
            raise TooLarge(
                self._name, f"line {self.line_number - len(self.taken) + 1}", self._limit
            )
        return line

    def row_text(self) -> tuple[int, str]:
        """First line number and raw text of the row just read; resets for the next row."""
        text = "".join(self.taken).rstrip("\r\n")
        first = self.line_number - len(self.taken) + 1
        self.taken.clear()
        self._size = 0
        return first, text


def _first_non_utf8_line(fh: io.BufferedReader) -> int | None:
    """The line holding the first bytes that are not UTF-8, or None when the input cannot be read
    again (standard input). The text wrapper decodes ahead in chunks, so its own position is no
    guide; a line at a time is exact, as a newline byte never occurs inside a UTF-8 sequence."""
    try:
        fh.seek(0)
    except (OSError, ValueError):
        return None
    for number, line in enumerate(fh, 1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return number
    return None


def _csv_rows(
    fh: io.BufferedReader,
    name: str,
    delimiter: str,
    check_header: "HeaderCheck | None",
    limit: int = MAX_RECORD_BYTES,
) -> Iterator[Item]:
    # The csv module refuses fields over 128 KiB; a long field is a record like any other up to
    # the record cap, which the line tap enforces on the whole row.
    csv.field_size_limit(max(limit, 1 << 17))
    text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
    tap = _LineTap(text, name, limit)
    # Strict: a quote that opens a cell and never closes would otherwise take the rest of the
    # file into that cell, one row that hides every record after it.
    reader = csv.reader(tap, strict=True, delimiter=delimiter)
    try:
        # Blank lines before the header are skipped, as after it: taken as an empty header, they
        # made a file load nothing and report success.
        header = [column.strip() for column in next((row for row in reader if row), [])]
        _, header_text = tap.row_text()
        if not header:
            return
        if check_header is not None:
            # Before any row: with the wrong delimiter every row would be a reject.
            check_header(name, header, header_text, delimiter)
        if len(set(header)) != len(header) or "" in header:
            raise InputError(
                f"{name}: the CSV header has blank or repeated column names; give every column a unique name"
            )
        width = len(header)
        for row in reader:
            position, raw = tap.row_text()
            if not row:
                continue
            if len(row) != width:
                yield (
                    position,
                    raw,
                    Malformed(WRONG_COLUMNS, f"row has {len(row)} columns, the header has {width}"),
                )
            else:
                yield position, raw, dict(zip(header, row, strict=True))
    except UnicodeDecodeError:
        line = _first_non_utf8_line(fh)
        where = "" if line is None else f" at line {line}"
        raise InputError(f"{name} is not valid UTF-8{where}; re-encode it as UTF-8") from None
    except csv.Error as error:
        start = tap.line_number - len(tap.taken) + 1
        raise InputError(
            f"{name}: the CSV row from line {start} cannot be read ({error}); check its quotes: a "
            'cell that starts with " must end with " (and double any " inside it)'
        ) from None
    finally:
        text.detach()
