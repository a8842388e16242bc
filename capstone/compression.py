"""Compressed input, recognised from its first bytes whatever the file is called.

gzip (several members one after another too), bzip2, xz and zstd open as a stream of their
decompressed bytes, read a piece at a time so memory stays flat however large the file. A stream
that is cut off or damaged fails with an `InputError` naming the file. Known binary formats that
are no text at all (a PNG, a zip, an Avro file) are named too, so a file can be refused with a
message saying what it looks like instead of being read as lines of garbage.
"""

import bz2
import gzip
import io
import lzma
import zlib
from typing import Any, BinaryIO, Literal

import zstandard

from capstone.errors import InputError

__all__ = [
    "SNIFF_BYTES",
    "SUFFIXES",
    "Compression",
    "check_text",
    "decompressed",
    "detect",
]

Compression = Literal["gzip", "bzip2", "xz", "zstd"]

SNIFF_BYTES = 16
"""First bytes `detect` and `check_text` need to tell a format (fewer only in a shorter file);
given 262 or more, `check_text` also knows a tar archive."""

SUFFIXES = frozenset({".gz", ".gzip", ".bz2", ".xz", ".zst", ".zstd"})
"""Names that say a file is compressed; the name before them (`.jsonl` in `x.jsonl.gz`) still
says the format. The content decides whether it is compressed, never the name."""

_BZIP2_BLOCK = (b"1AY&SY", b"\x17rE8P\x90")  # the first block's magic, or an empty stream's end
_ZSTD_FRAME = b"\x28\xb5\x2f\xfd"
_ZSTD_SKIPPABLE = b"\x2a\x4d\x18"  # after a first byte 0x50..0x5f: a frame of metadata to skip


def detect(head: bytes) -> Compression | None:
    """The compression whose magic number the content starts with, or None for anything else."""
    if head.startswith(b"\x1f\x8b\x08"):
        return "gzip"
    if head.startswith(b"BZh") and head[3:4] in b"123456789" and head[4:10] in _BZIP2_BLOCK:
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(_ZSTD_FRAME) or (
        head[:1] and head[0] >> 4 == 5 and head[1:4] == _ZSTD_SKIPPABLE
    ):
        return "zstd"
    return None


_CHECK_PATH = (
    "check the --input path (capstone reads those plain or gzip, bzip2, xz or zstd compressed)"
)
_UNPACK = "and pass the files it holds (or their folder) to --input"
_EXPORT = "export it as JSON Lines or CSV first"

_SIGNATURES: tuple[tuple[bytes, str, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image", _CHECK_PATH),
    (b"\xff\xd8\xff", "a JPEG image", _CHECK_PATH),
    (b"GIF87a", "a GIF image", _CHECK_PATH),
    (b"GIF89a", "a GIF image", _CHECK_PATH),
    (b"%PDF-", "a PDF document", _CHECK_PATH),
    (b"\x7fELF", "an executable program", _CHECK_PATH),
    (b"PK\x03\x04", "a zip archive (or an .xlsx or .docx file)", f"unzip it {_UNPACK}"),
    (b"PK\x05\x06", "an empty zip archive", _CHECK_PATH),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", f"extract it {_UNPACK}"),
    (b"Rar!\x1a\x07", "a RAR archive", f"extract it {_UNPACK}"),
    (b"Obj\x01", "an Avro file", _EXPORT),
    (b"ARROW1", "an Arrow file", _EXPORT),
    (b"SQLite format 3\x00", "a SQLite database", f"{_EXPORT}, or pass it to --db"),
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "an old Office document (.xls or .doc)",
        "save it as CSV first",
    ),
    (
        b"\x04\x22\x4d\x18",
        "LZ4-compressed data",
        "decompress it first (lz4 -d), or compress it with gzip or zstd",
    ),
    (b"\xff\xfe", "UTF-16 text", "re-encode it as UTF-8 (iconv -f utf-16 -t utf-8)"),
    (b"\xfe\xff", "UTF-16 text", "re-encode it as UTF-8 (iconv -f utf-16 -t utf-8)"),
)
_TAR = (257, b"ustar")  # a tar header's magic sits after the first member's name
_BOM = b"\xef\xbb\xbf"
_CONTROL = bytes(range(0x20)) + b"\x7f"
"""Control bytes. Text is never made of them alone: content that holds nothing else (NUL
padding, a device dump) is binary, whatever --format or the name says. Whitespace alone, the
ASCII kind `bytes.strip` removes (\\v and \\f too), is an empty file, not binary."""


def _control_bytes_only(head: bytes) -> bool:
    """Whether the content's first bytes, past a BOM and whitespace, are all control bytes."""
    text = head.removeprefix(_BOM).strip()
    return bool(text) and not text.translate(None, _CONTROL)


_NOT_TEXT_SHARE = 4
"""Content whose first bytes are more than 1 in this many neither text nor UTF-8 is binary."""

_ODD_CONTROLS = bytes(b for b in _CONTROL if b not in b"\t\n\r\f\v")
"""Control bytes that text does not hold (whitespace aside)."""


def _mostly_not_text(head: bytes) -> bool:
    """Whether more than a quarter of the first bytes are control bytes (other than whitespace)
    or bytes that do not decode as UTF-8. Text in the wrong encoding (Latin-1, say) has a few
    such bytes, a line of garbage some more; random or binary data has about two in three."""
    if len(head) < 64:
        return False  # too little to judge: a short garbage line is a record to dead-letter
    odd = len(head) - len(head.translate(None, _ODD_CONTROLS))
    # Each byte of an invalid sequence decodes to one replacement character (a character cut
    # off at the end of `head` adds one or two).
    text = head.decode("utf-8", "replace")
    odd += text.count("\ufffd") - head.count("\ufffd".encode())
    return odd * _NOT_TEXT_SHARE > len(head)


def check_text(head: bytes, name: str, compression: Compression | None = None) -> None:
    """Raise InputError when the (decompressed) content starts like a known binary format.

    Text that merely holds odd bytes is left alone: a line of garbage is a record to dead-letter,
    not a reason to refuse the file. A format recognised for sure is refused, by name, and so is
    content whose first bytes hold no text at all, only control bytes (NUL and the like), or
    are mostly neither text nor UTF-8 (random bytes, an unknown binary format).
    """
    found = next(((what, fix) for magic, what, fix in _SIGNATURES if head.startswith(magic)), None)
    if found is None and head[_TAR[0] : _TAR[0] + len(_TAR[1])] == _TAR[1]:
        found = ("a tar archive", f"extract it (tar -xf) {_UNPACK}")
    if found is None and (inner := detect(head)) is not None:
        found = (
            f"{inner} data",
            "it was compressed twice; decompress it once, capstone undoes the other",
        )
    if found is None and _control_bytes_only(head):
        found = ("binary data (control bytes such as NUL and no text)", _CHECK_PATH)
    if found is None and _mostly_not_text(head.removeprefix(_BOM)):
        found = (
            "binary data, or text in an encoding other than UTF-8 (most of its first bytes are "
            "not UTF-8 text)",
            "check the --input path, or re-encode the file as UTF-8 (iconv -f ENCODING -t utf-8)",
        )
    if found is None:
        return
    what, fix = found
    wrapped = "" if compression is None else f"is {compression}-compressed, and what it holds "
    raise InputError(
        f"{name} {wrapped}looks like {what}, not JSON, JSON Lines, CSV or Parquet; {fix}"
    )


def decompressed(fh: BinaryIO, compression: Compression, name: str) -> io.BufferedReader:
    """The decompressed bytes of `fh` from its current position, streamed; `name` is for errors.

    Reading past damaged or cut-off data raises InputError. `seek(0)` starts over from the same
    compressed position when `fh` can seek (a file; not a pipe)."""
    return io.BufferedReader(_Decompressing(fh, compression, name), buffer_size=1 << 16)


class _ZstdFrames(io.RawIOBase):
    """zstd frames one after another (skippable ones too), decompressed a small piece of input at
    a time. python-zstandard's own `stream_reader` ends quietly at a cut in the data; this reader
    knows whether the last frame was finished, and raises EOFError when it was not."""

    _PIECE = 512
    """Compressed bytes per step. zstd expands at most ~32,768 times (runs of one byte), so no
    step makes more than 16 MiB whatever the file holds; a typical one makes a few KiB."""

    def __init__(self, compressed: BinaryIO) -> None:
        self._compressed = compressed
        self._decompressor = zstandard.ZstdDecompressor()
        self._frame: Any = None  # the frame under way (a ZstdDecompressionObj), None between frames
        self._input, self._at = b"", 0  # compressed bytes read, and how far they are decompressed
        self._output = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        filled, size = 0, len(buffer)
        while filled < size:
            if not self._output and not self._step():
                break
            taken = self._output[: size - filled]
            buffer[filled : filled + len(taken)] = taken
            self._output = self._output[len(taken) :]
            filled += len(taken)
        return filled

    def _step(self) -> bool:
        """Decompress the next piece of input; False at the end of the last frame."""
        if self._at == len(self._input):
            self._input, self._at = self._compressed.read(1 << 16), 0
            if not self._input:
                if self._frame is not None:
                    raise EOFError("the last zstd frame is cut off")
                return False
        if self._frame is None:
            self._frame = self._decompressor.decompressobj()
        piece = self._input[self._at : self._at + self._PIECE]
        self._at += len(piece)
        self._output = memoryview(self._frame.decompress(piece))
        if self._frame.eof:
            self._at -= len(self._frame.unused_data)  # the next frame starts there
            self._frame = None
        return True


def _open(compressed: BinaryIO, compression: Compression) -> io.BufferedIOBase:
    """A reader of the decompressed bytes; the standard library's read member after member."""
    if compression == "gzip":
        return gzip.GzipFile(fileobj=compressed, mode="rb")
    if compression == "bzip2":
        return bz2.BZ2File(compressed)
    if compression == "xz":
        return lzma.LZMAFile(compressed)
    return io.BufferedReader(_ZstdFrames(compressed))


_DAMAGED = (OSError, zlib.error, lzma.LZMAError, zstandard.ZstdError)


class _Decompressing(io.RawIOBase):
    """The decompressed bytes of a compressed stream, with its errors turned into InputError."""

    def __init__(self, compressed: BinaryIO, compression: Compression, name: str) -> None:
        self._compressed = compressed
        self._compression = compression
        self._name = name
        self._start = compressed.tell() if compressed.seekable() else 0
        self._stream = _open(compressed, compression)
        self._position = 0

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._stream.close()  # the decompressor only: whoever opened the file closes it
        super().close()

    def seekable(self) -> bool:
        return self._compressed.seekable()

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if (offset, whence) == (0, io.SEEK_CUR):
            return self._position
        if (offset, whence) != (0, io.SEEK_SET):
            raise io.UnsupportedOperation(
                "decompressed input can only start over from the beginning"
            )
        self._stream.close()
        self._compressed.seek(self._start)
        self._stream = _open(self._compressed, self._compression)
        self._position = 0
        return 0

    def readinto(self, buffer: Any) -> int:
        try:
            count = self._stream.readinto(buffer)
        except EOFError:
            raise InputError(
                f"{self._name} ends in the middle of its {self._compression} data (the file is cut off); copy or download it again"
            ) from None
        except _DAMAGED as error:
            if isinstance(error, OSError) and error.errno is not None:
                raise  # the disk, not the data: reported as a failed read
            raise InputError(
                f"{self._name} is not valid {self._compression} data ({error}); the file is damaged: copy or download it again"
            ) from None
        self._position += count
        return count
