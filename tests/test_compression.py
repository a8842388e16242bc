"""Compressed input: told from the first bytes whatever the name, streamed, and refused cleanly
when cut off, damaged or not text at all; loaded end to end like the same file uncompressed."""

import bz2
import gzip
import io
import lzma
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capstone import run
from capstone.compression import Compression, decompressed, detect
from capstone.errors import InputError
from capstone.sources import Format, SourceFile
from tests.conftest import event, fetch
from tests.test_sources import _Pipe


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(write_checksum=True).compress(data)


SUFFIX: dict[Compression, str] = {"gzip": ".gz", "bzip2": ".bz2", "xz": ".xz", "zstd": ".zst"}
COMPRESS: dict[Compression, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "zstd": zstd,
}
EACH = pytest.mark.parametrize("compression", list(COMPRESS))

EVENTS = [event(f"k{i}", f"2025-01-01T00:{i:02d}:00", value=i) for i in range(3)]
JSONL = b"".join(orjson.dumps(record) + b"\n" for record in EVENTS)
CSV = b"key,name,value,ts\n" + b"".join(
    b"%s,%s,%d,%s\n" % (r["key"].encode(), r["name"].encode(), r["value"], r["ts"].encode())
    for r in EVENTS
)


def numbered_lines(count: int) -> bytes:
    """JSON Lines that compress only so far (a number differs on every line)."""
    return b"".join(
        b'{"key": "k%d", "value": %d}\n' % (i, i * 7919 % 100_003) for i in range(count)
    )


def write(path: Path, data: bytes, compression: Compression | None = None) -> str:
    path.write_bytes(data if compression is None else COMPRESS[compression](data))
    return str(path)


def read(path: str, fmt: Format | None = None) -> list[tuple[int, Any, Any]]:
    with SourceFile(path, fmt) as source:
        return list(source.records())


def outcome(path: str) -> tuple[str | None, list[tuple[int, Any, Any]]]:
    """What reading a file gives: its format and records, or InputError (format None)."""
    try:
        with SourceFile(path) as source:
            return source.format, list(source.records())
    except InputError:
        return None, []


# -- reading ------------------------------------------------------------------------------------


@EACH
def test_a_compressed_file_reads_as_the_same_file_plain(
    tmp_path: Path, compression: Compression
) -> None:
    """Each compression is told from the content and gives the records of the plain file."""
    data = numbered_lines(5000)
    plain = write(tmp_path / "plain.jsonl", data)
    packed = write(tmp_path / "packed.jsonl", data, compression)
    with SourceFile(packed) as source:
        assert source.compression == compression
        assert list(source.records()) == read(plain)


@EACH
def test_streams_one_after_another_are_read_whole(tmp_path: Path, compression: Compression) -> None:
    """Concatenated gzip members (and bzip2 streams, xz streams, zstd frames) are one file."""
    first, second = numbered_lines(10), b'{"key": "last"}\n'
    path = tmp_path / "joined.jsonl"
    path.write_bytes(COMPRESS[compression](first) + COMPRESS[compression](second))
    assert [raw for _, raw, _ in read(str(path))] == (first + second).splitlines()


def test_a_zstd_skippable_frame_is_skipped(tmp_path: Path) -> None:
    """A zstd frame of metadata (skippable) before the data adds no record."""
    skippable = (0x184D2A50).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc"
    path = tmp_path / "x.jsonl"
    path.write_bytes(skippable + zstd(JSONL))
    assert len(read(str(path))) == 3


def test_gzip_under_a_plain_name_or_a_forced_format_is_decompressed(tmp_path: Path) -> None:
    """The name does not decide: gzip named .jsonl, or read with format jsonl, is decompressed,
    never read as lines of binary."""
    path = write(tmp_path / "events.jsonl", JSONL, "gzip")
    assert [raw for _, raw, _ in read(path)] == JSONL.splitlines()
    assert [raw for _, raw, _ in read(path, "jsonl")] == JSONL.splitlines()


@pytest.mark.parametrize(
    ("content", "expected"), [(b'[{"key": "a"}]', "json"), (JSONL, "jsonl"), (CSV, "csv")]
)
def test_the_format_is_detected_from_the_decompressed_content(
    tmp_path: Path, content: bytes, expected: Format
) -> None:
    """A compressed file whose name says no format is sniffed after decompression."""
    with SourceFile(write(tmp_path / "events.gz", content, "gzip")) as source:
        assert source.format == expected


@pytest.mark.parametrize(("name", "expected"), [("x.csv.zst", "csv"), ("x.jsonl.gz", "jsonl")])
def test_the_name_under_the_compression_suffix_says_the_format(
    tmp_path: Path, name: str, expected: Format
) -> None:
    """`x.csv.zst` is CSV and `x.jsonl.gz` JSON Lines, as `x.csv` and `x.jsonl` are, even when
    the content alone would be sniffed as a JSON array."""
    with SourceFile(write(tmp_path / name, b"[a]\n", "zstd")) as source:
        assert source.format == expected


def test_compressed_standard_input_arriving_a_byte_at_a_time_is_detected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pipe that delivers the magic number in pieces is still recognised as gzip."""
    packed = gzip.compress(JSONL)
    pieces = [packed[:1], packed[1:2], packed[2:]]
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=_Pipe(*pieces)))
    assert [raw for _, raw, _ in read("-")] == JSONL.splitlines()


def test_bytes_read_counts_the_compressed_bytes(tmp_path: Path) -> None:
    """Progress is the compressed file's: part way while reading, all of it at the end."""
    path = write(tmp_path / "big.jsonl.gz", numbered_lines(200_000), "gzip")
    with SourceFile(path) as source:
        records = source.records()
        next(records)
        assert 0 < source.bytes_read() < (source.size or 0)
        for _ in records:
            pass
        assert source.bytes_read() == source.size


def test_invalid_utf8_in_a_compressed_csv_names_its_line(tmp_path: Path) -> None:
    """The UTF-8 error names the line even though finding it means decompressing again."""
    rows = [b"key,value", *(b"k%d,1" % i for i in range(50)), b"k51,caf\xe9"]
    path = write(tmp_path / "bad.csv.gz", b"\n".join(rows) + b"\n", "gzip")
    with pytest.raises(InputError, match=r"bad\.csv\.gz is not valid UTF-8 at line 52;"):
        read(path)


# -- refusing -----------------------------------------------------------------------------------


@EACH
def test_a_cut_off_file_fails_naming_it(tmp_path: Path, compression: Compression) -> None:
    """A compressed file cut short fails with an InputError naming it, not a traceback."""
    packed = COMPRESS[compression](numbered_lines(2000))
    path = tmp_path / "cut.jsonl"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(
        InputError, match=rf"cut\.jsonl ends in the middle of its {compression} data"
    ):
        read(str(path))


@EACH
def test_damaged_data_fails_naming_it(tmp_path: Path, compression: Compression) -> None:
    """Flipped bytes in the middle of the data fail the file with an InputError naming it."""
    packed = bytearray(COMPRESS[compression](numbered_lines(2000)))
    middle = len(packed) // 2
    packed[middle : middle + 16] = bytes(byte ^ 0xFF for byte in packed[middle : middle + 16])
    path = tmp_path / "damaged.jsonl"
    path.write_bytes(packed)
    with pytest.raises(InputError, match=rf"damaged\.jsonl is not valid {compression} data \("):
        read(str(path))


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_a_cut_off_file_fails_the_same_in_every_format(tmp_path: Path, fmt: Format) -> None:
    """The cut is reported as such, not as a truncated array or a broken CSV row."""
    many = [event(f"k{i}", "2025-01-01T00:00:00", value=i * 7919 % 100_003) for i in range(3000)]
    if fmt == "json":
        data = orjson.dumps(many)
    elif fmt == "jsonl":
        data = b"".join(orjson.dumps(record) + b"\n" for record in many)
    else:
        data = b"key,name,value,ts\n" + b"".join(
            b"%s,n,%d,2025-01-01T00:00:00\n" % (r["key"].encode(), r["value"]) for r in many
        )
    packed = gzip.compress(data)
    path = tmp_path / f"cut.{fmt}.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(InputError, match="ends in the middle of its gzip data"):
        read(str(path))


def test_garbage_after_a_gzip_member_fails(tmp_path: Path) -> None:
    """Bytes after the last member that start no new member are damage, not ignored."""
    path = tmp_path / "x.jsonl.gz"
    path.write_bytes(gzip.compress(JSONL) + b"not gzip")
    with pytest.raises(InputError, match="is not valid gzip data"):
        read(str(path))


@pytest.mark.parametrize(
    ("head", "looks_like", "fix"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "a PNG image", "check the --input path"),
        (b"PK\x03\x04\x14\x00\x00\x00\x08\x00", "a zip archive", "unzip it and pass the files"),
        (b"Obj\x01\x04\x14avro.schema", "an Avro file", "export it as JSON Lines or CSV"),
        ("[{}]".encode("utf-16"), "UTF-16 text", "re-encode it as UTF-8"),
    ],
)
def test_a_known_binary_format_is_refused_saying_what_it_looks_like(
    tmp_path: Path, head: bytes, looks_like: str, fix: str
) -> None:
    """A binary file under a text name fails with one line: what it looks like and what to do."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(head + bytes(range(256)))
    with pytest.raises(InputError) as refused:
        read(str(path))
    message = str(refused.value)
    assert message.startswith(f"{path} looks like {looks_like}")
    assert f", not JSON, JSON Lines, CSV or Parquet; {fix}" in message
    assert "\n" not in message


def test_a_tar_archive_inside_gzip_is_named(tmp_path: Path) -> None:
    """A .tar.gz says it holds a tar archive and to extract it."""
    header = b"events.jsonl".ljust(257, b"\x00") + b"ustar\x0000"
    path = write(tmp_path / "feed.tar.gz", header.ljust(1024, b"\x00"), "gzip")
    with pytest.raises(
        InputError,
        match=r"is gzip-compressed, and what it holds looks like a tar archive, .*extract it",
    ):
        read(path)


def test_a_file_compressed_twice_is_named(tmp_path: Path) -> None:
    """zstd inside gzip is refused with the reason, not read as binary lines."""
    path = write(tmp_path / "x.jsonl.gz", zstd(JSONL), "gzip")
    with pytest.raises(InputError, match=r"looks like zstd data, .*compressed twice"):
        read(path)


def test_text_with_stray_binary_bytes_is_still_read_line_by_line(tmp_path: Path) -> None:
    """Only a recognised format is refused: garbage in a line is that line's dead letter."""
    path = write(tmp_path / "x.jsonl", b'{"key": "a"}\n\x00\x01\xff\xfe\n', "gzip")
    assert [raw for _, raw, _ in read(path)] == [b'{"key": "a"}', b"\x00\x01\xff\xfe"]


def test_detect_ignores_text_that_starts_like_a_magic_number() -> None:
    """bzip2's "BZh" is only bzip2 with a block after it; plain text stays plain."""
    assert detect(b"BZh9,name\n") is None
    assert detect(bz2.compress(b"x")) == "bzip2"
    assert detect(b"") is None


# -- memory -------------------------------------------------------------------------------------


def peak_while_reading(stream: io.BufferedReader) -> int:
    """Bytes the Python heap peaked at while `stream` was read to the end, 1 MiB at a time."""
    tracemalloc.start()
    try:
        while stream.read(1 << 20):
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@EACH
def test_a_large_file_is_decompressed_in_bounded_memory(
    tmp_path: Path, compression: Compression
) -> None:
    """32 MiB of content (32 streams of 1 MiB) is streamed, never held whole: memory is the
    format's window (xz's dictionary: 8 MiB at the default preset) and a few buffers."""
    path = tmp_path / "large"
    path.write_bytes(COMPRESS[compression](numbered_lines(30_000)[: 1 << 20]) * 32)
    with path.open("rb") as fh:
        assert peak_while_reading(decompressed(fh, compression, "large")) < 16 << 20


def test_a_zstd_bomb_is_decompressed_in_bounded_memory(tmp_path: Path) -> None:
    """One zstd frame of 256 MiB of zeros (8 KiB compressed) is decompressed in steps of at most
    16 MiB, never at once."""
    writer = zstandard.ZstdCompressor().compressobj()
    packed = b"".join(writer.compress(bytes(1 << 20)) for _ in range(256)) + writer.flush()
    assert len(packed) < 16 << 10
    path = tmp_path / "bomb.zst"
    path.write_bytes(packed)
    with path.open("rb") as fh:
        assert peak_while_reading(decompressed(fh, "zstd", "bomb.zst")) < 40 << 20


# -- end to end through capstone.run ------------------------------------------------------------


def loaded_keys(db: str) -> list[str]:
    """Keys in the target table; none when no database was created."""
    if not Path(db).exists():
        return []
    return sorted(key for (key,) in fetch(db, "SELECT key FROM target"))


@pytest.mark.parametrize(
    ("name", "content", "compression"),
    [
        ("events.jsonl.gz", JSONL, "gzip"),
        ("events.csv.zst", CSV, "zstd"),
        ("events.jsonl", JSONL, "gzip"),  # gzip under a plain name
    ],
)
def test_run_loads_a_compressed_file(
    tmp_path: Path, db_path: str, name: str, content: bytes, compression: Compression
) -> None:
    """A compressed file loads every record through capstone.run, whatever its name."""
    summary = run(write(tmp_path / name, content, compression), db_path)
    assert (summary.input_records, summary.loaded, summary.rejected) == (3, 3, 0)
    assert loaded_keys(db_path) == ["k0", "k1", "k2"]


def test_run_refuses_a_png_named_jsonl_and_loads_nothing(tmp_path: Path, db_path: str) -> None:
    """A PNG under a .jsonl name fails the run with InputError; nothing is loaded."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(InputError, match="looks like a PNG image"):
        run(str(path), db_path)
    assert loaded_keys(db_path) == []


def test_run_fails_on_a_cut_off_file_and_keeps_nothing(tmp_path: Path, db_path: str) -> None:
    """A gzip file cut short fails its run (logged as failed) and nothing from it is loaded."""
    packed = gzip.compress(
        numbered_lines(50_000).replace(
            b'"value"', b'"name": "n", "ts": "2025-01-01T00:00:00", "value"'
        )
    )
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(InputError, match="cut off"):
        run(str(path), db_path)
    assert loaded_keys(db_path) == []
    assert fetch(db_path, "SELECT status FROM run_log") == [("failed",)]


MIXED = [*EVENTS, {"key": "bad", "value": "x"}, event("k0", "2025-01-01T01:00:00", value=9)]


def formatted(fmt: Format) -> bytes:
    """The MIXED records (valid, invalid, a newer duplicate key) in one format."""
    if fmt == "json":
        return orjson.dumps(MIXED)
    if fmt == "jsonl":
        return b"".join(orjson.dumps(record) + b"\n" for record in MIXED)
    rows = [
        ",".join(str(record.get(field, "")) for field in ("key", "name", "value", "ts"))
        for record in MIXED
    ]
    return "\n".join(["key,name,value,ts", *rows, ""]).encode()


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_every_compression_of_the_same_content_loads_the_same(tmp_path: Path, fmt: Format) -> None:
    """Plain, gzip, bzip2, xz and zstd copies of one file give the same counts and target rows."""
    results = []
    for compression in [None, *COMPRESS]:
        suffix = "" if compression is None else SUFFIX[compression]
        db = str(tmp_path / f"{compression}.db")
        summary = run(write(tmp_path / f"events.{fmt}{suffix}", formatted(fmt), compression), db)
        counts = summary.model_dump(
            include={
                "input_records",
                "staged",
                "loaded",
                "stale",
                "rejected",
                "dead_letters",
                "watermark",
            }
        )
        results.append((counts, fetch(db, "SELECT key, name, value, ts FROM target ORDER BY key")))
    assert results[0][0]["rejected"] == 1
    assert all(result == results[0] for result in results)


CONTENT = st.one_of(
    st.binary(max_size=300),
    st.lists(
        st.sampled_from(
            [b'{"key": "a"}', b"[", b"]", b"{", b",", b"key,value", b"\xff", b" ", b"\n", b'"']
        ),
        max_size=40,
    ).map(b"".join),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=CONTENT, suffix=st.sampled_from([".txt", ".jsonl", ".csv", ".json"]))
def test_reading_compressed_bytes_gives_what_reading_them_plain_gives(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, suffix: str
) -> None:
    """For any content, each compression yields the plain file's format and records, or fails
    when the plain file fails."""
    folder = tmp_path_factory.mktemp("same")
    expected = outcome(write(folder / f"plain{suffix}", data))
    for compression in COMPRESS:
        assert (
            outcome(write(folder / f"packed{suffix}{SUFFIX[compression]}", data, compression))
            == expected
        )
