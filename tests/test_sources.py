"""Reading sources: formats, positions, raw text, and unreadable files."""

import io
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from capstone.errors import InputError
from capstone.jsontext import dumps_exact, loads_exact
from capstone.sources import Format, Malformed, SourceFile, _csv_header, parse_object


def read(path: Path, fmt: Format | None = None) -> list[tuple[int, Any, Any]]:
    with SourceFile(str(path), fmt) as source:
        return list(source.records())


def test_json_array_elements_keep_their_index_and_exact_raw_text(tmp_path: Path) -> None:
    """A JSON array's records carry their 0-based index and their text exactly as written."""
    path = tmp_path / "a.json"
    path.write_text(
        '[ {"key": "a",\n  "n": 123456789012345678901234567890}, 5 ,{"key": "\\ud800"}]'
    )
    items = read(path)
    assert [(position, raw) for position, raw, _ in items] == [
        (0, '{"key": "a",\n  "n": 123456789012345678901234567890}'),
        (1, "5"),
        (2, '{"key": "\\ud800"}'),
    ]


def test_json_array_elements_split_across_read_chunks(tmp_path: Path) -> None:
    """Elements and numbers that straddle the reader's 1 MB chunks come out whole."""
    records = [f'{{"key": "k{i}", "value": {i * 1000003}}}' for i in range(60_000)]
    path = tmp_path / "a.json"
    path.write_text("[" + ",".join(records) + ", 12345678901234567890]")
    items = read(path)
    assert [raw for _, raw, _ in items] == [*records, "12345678901234567890"]


def test_json_array_nested_too_deep_for_the_decoder_is_one_element(tmp_path: Path) -> None:
    """An element nested deeper than Python's recursion limit is found whole, not a crash."""
    deep = "[" * 5000 + "]" * 5000
    path = tmp_path / "a.json"
    path.write_text(f'[{deep}, {{"key": "a"}}]')
    assert [raw for _, raw, _ in read(path)] == [deep, '{"key": "a"}']


def test_text_after_the_array_is_refused(tmp_path: Path) -> None:
    """Anything but white space after the closing bracket fails the run."""
    path = tmp_path / "a.json"
    path.write_text('[{"key": "a"}] {"key": "b"}')
    with pytest.raises(InputError, match="after the closing"):
        read(path)


class _Pipe(io.RawIOBase):
    """Standard input from a pipe that delivers its bytes in the pieces given."""

    def __init__(self, *pieces: bytes) -> None:
        self.pieces = list(pieces)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        piece = self.pieces.pop(0) if self.pieces else b""
        buffer[: len(piece)] = piece
        return len(piece)


def test_a_pipe_that_sends_a_blank_line_first_is_still_detected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Format detection reads past a first piece of white space instead of guessing from it; the
    blank line still counts for JSON Lines positions."""
    array = b'[{"key": "a"}, {"key": "b"}]'
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=_Pipe(b"\n", array)))
    assert [raw for _, raw, _ in read(Path("-"))] == ['{"key": "a"}', '{"key": "b"}']
    lines = (b"\n", b"\n", b'{"key": "a"}\n{"key": "b"}\n')
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=_Pipe(*lines)))
    assert [position for position, _, _ in read(Path("-"))] == [3, 4]


def test_json_lines_positions_are_line_numbers_and_blank_lines_are_ignored(tmp_path: Path) -> None:
    """JSON Lines records carry their 1-based line number and raw text; blank lines are skipped."""
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"key": "a"}\n\n{bad\r\n[1]\n')
    items = read(path)
    assert [(position, raw) for position, raw, _ in items] == [
        (1, b'{"key": "a"}'),
        (3, b"{bad"),
        (4, b"[1]"),
    ]
    assert all(parsed is None for _, _, parsed in items)  # parsed later, by the validator


def test_parse_object_tells_malformed_from_non_objects() -> None:
    """Invalid JSON and JSON that is not an object get different reason codes."""
    assert parse_object(b'{"key": "a"}') == {"key": "a"}
    assert isinstance(bad := parse_object(b"{bad"), Malformed)
    assert bad.code == "malformed.json"
    assert isinstance(array := parse_object(b"[1]"), Malformed)
    assert array.code == "malformed.not_object"


def test_csv_rows_keep_raw_text_and_line_numbers(tmp_path: Path) -> None:
    """CSV rows are dicts of strings with their first line number and raw text."""
    path = tmp_path / "a.csv"
    path.write_text('key,name,value,ts\na,"multi\nline",1,2025-01-01T00:00:00\nb,n\n')
    items = read(path)
    assert items[0][0] == 2
    assert items[0][2]["name"] == "multi\nline"
    assert items[1][0] == 4
    assert items[1][1] == "b,n"
    assert items[1][2].code == "malformed.columns"


def test_utf8_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    """A BOM at the start and CRLF line ends do not change the records."""
    path = tmp_path / "a.csv"
    path.write_bytes(b"\xef\xbb\xbfkey,value\r\na,1\r\n")
    assert read(path)[0][2] == {"key": "a", "value": "1"}


def test_a_csv_quote_that_never_closes_fails_the_file(tmp_path: Path) -> None:
    """One stray quote would take every later row into one cell (one dead letter hiding them):
    the file is refused instead, naming the row where the quote opened."""
    path = tmp_path / "a.csv"
    path.write_text('key,value\na,1\nb,"2\nc,3\nd,4\n')
    with pytest.raises(InputError, match="the CSV row from line 3 cannot be read"):
        read(path)


def test_blank_lines_before_a_csv_header_are_skipped(tmp_path: Path) -> None:
    """The header is the first non-blank line; positions stay the file's line numbers."""
    path = tmp_path / "a.csv"
    path.write_text("\n\nkey,value\na,1\n")
    assert [(position, parsed) for position, _, parsed in read(path)] == [
        (4, {"key": "a", "value": "1"})
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"  [ {}]", "json"), (b'{"a": 1}\n', "jsonl"), (b"key,value\n", "csv"), (b"", "jsonl")],
)
def test_format_is_detected_from_content(tmp_path: Path, content: bytes, expected: str) -> None:
    """The first non-blank byte decides the format: [ array, { lines, else CSV."""
    path = tmp_path / "x"
    path.write_bytes(content)
    with SourceFile(str(path)) as source:
        assert source.format == expected


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    """A missing input gives an InputError naming the path."""
    with pytest.raises(InputError, match="does not exist"):
        read(tmp_path / "nope.json")


def test_truncated_json_array_is_an_input_error(tmp_path: Path) -> None:
    """A JSON array cut off mid-way fails the whole run instead of loading part of it."""
    path = tmp_path / "a.json"
    path.write_text('[{"key": "a"}, {"key": ')
    with pytest.raises(InputError, match="truncated"):
        read(path)


def test_top_level_object_is_refused_with_a_hint(tmp_path: Path) -> None:
    """A pretty-printed single object is not mistaken for JSON Lines."""
    path = tmp_path / "a.json"
    path.write_text('{\n  "key": "a"\n}\n')
    with pytest.raises(InputError, match="pretty-printed"):
        read(path)


def test_csv_read_as_json_lines_is_refused_naming_the_format(tmp_path: Path) -> None:
    """A CSV file forced to JSON Lines fails at its header, instead of loading every row as a
    dead letter with a success."""
    path = tmp_path / "a.csv"
    path.write_text("key;name;value;ts\nk1;a;1;2025-01-01T00:00:00\n")
    with pytest.raises(
        InputError,
        match=r"a.csv was read as JSON Lines, but its first line is a CSV header \(4 columns "
        r"split by ';'\); pass --format csv",
    ):
        read(path, "jsonl")


@pytest.mark.parametrize(
    ("line", "split"),
    [
        (b"key,name,value,ts\n", "4 columns split by ','"),
        (b'"key";"reading ts"\r\n', "2 columns split by ';'"),
        (b"key\tts", "2 columns split by tab"),
        (b'{"key": "a", "ts": 1}', ""),
        (b'"key": "a", "ts": "b"', ""),
        (b"key", ""),
        (b"1,2,3", ""),
        (b"key,,ts", ""),
    ],
)
def test_a_csv_header_is_told_from_a_json_line(line: bytes, split: str) -> None:
    """Two or more plain column names split by a delimiter make a CSV header; no JSON line,
    whole or broken, is one."""
    assert _csv_header(line) == split


def test_forced_json_on_non_array_is_refused(tmp_path: Path) -> None:
    """--format json on something that is not an array says so."""
    path = tmp_path / "a.json"
    path.write_text('{"key": "a"}\n')
    with pytest.raises(InputError, match=r"not a JSON array .*check --format, or leave it out"):
        read(path, "json")


def test_invalid_utf8_in_csv_is_an_input_error(tmp_path: Path) -> None:
    """CSV that is not UTF-8 stops the run with a hint to re-encode."""
    path = tmp_path / "a.csv"
    path.write_bytes(b"key,value\na,\xff\xfe\n")
    with pytest.raises(InputError, match="UTF-8"):
        read(path)


def test_invalid_utf8_in_json_lines_is_a_malformed_record() -> None:
    """A JSON line that is not UTF-8 is one malformed record, not a failed run, and its reason
    names the byte and where it is."""
    assert parse_object(b'{"key": "\xff"}') == Malformed(
        "malformed.encoding",
        "line is not UTF-8 (byte 0xff at column 10); the raw text keeps it as \\x escapes",
    )


def test_json_text_keeps_integers_beyond_64_bits_exact() -> None:
    """orjson would read 2**90 as a float and refuse to write it; jsontext keeps its digits."""
    text = f'{{"id":{2**90},"small":1,"name":"é"}}'
    parsed = loads_exact(text)
    assert parsed == {"id": 2**90, "small": 1, "name": "é"}
    assert loads_exact(text.encode()) == parsed
    assert dumps_exact(parsed) == text
    assert dumps_exact(["O-1", 2]) == '["O-1",2]'


def test_invalid_utf8_in_csv_names_its_line(tmp_path: Path) -> None:
    """The error names the line with the bad bytes, however far the decoder had read ahead."""
    rows = [b"key,name,value,ts"] + [b"k%d,n,1,2025-01-01T00:00:00" % i for i in range(50)]
    rows.append(b"k51,caf\xe9,1,2025-01-01T00:00:00")
    path = tmp_path / "bad.csv"
    path.write_bytes(b"\n".join(rows) + b"\n")
    with SourceFile(str(path)) as source, pytest.raises(InputError, match="UTF-8 at line 52;"):
        list(source.records())


def test_a_broken_object_in_a_json_array_is_one_element_not_a_failed_file(tmp_path: Path) -> None:
    """An element whose brackets balance but whose JSON is broken is read as one record (for the
    dead-letter table); the elements around it are read as usual."""
    path = tmp_path / "a.json"
    path.write_text('[{"key": "a"},\n {bad: [1, "]"]},\n {"key": "b"}]')
    assert [(position, raw) for position, raw, _ in read(path)] == [
        (0, '{"key": "a"}'),
        (1, '{bad: [1, "]"]}'),
        (2, '{"key": "b"}'),
    ]


def test_broken_elements_whose_brackets_only_balance_together_fail_the_file(
    tmp_path: Path,
) -> None:
    """An extra `{` in one element and an extra `}` two elements later would balance into one
    dead letter holding valid records; where the first element ends is unknowable, so the run
    fails instead of hiding the records between."""
    path = tmp_path / "a.json"
    path.write_text(
        '[{"key": "a", "value": {, "ts": "x"}, {"key": "b"}, {"key": "c"}}, {"key": "d"}]'
    )
    with pytest.raises(InputError, match=r"at element 0 .*cannot be told from where the next"):
        read(path)


def test_a_nested_object_after_a_comma_is_still_one_broken_element(tmp_path: Path) -> None:
    """`, {` inside an object followed by a value that does not end an array element (a missing
    key name, say) is one broken record, as before: only run-together elements fail the file."""
    path = tmp_path / "a.json"
    path.write_text('[{"key": "a", {"note": 1}}, {"key": "b"}]')
    assert [raw for _, raw, _ in read(path)] == ['{"key": "a", {"note": 1}}', '{"key": "b"}']


@pytest.mark.parametrize("text", ["[", "[ ", '[{"key": "a"}, ', '[{"key": "a"},\n'])
def test_an_array_cut_off_after_an_opening_or_a_comma_is_truncated(
    tmp_path: Path, text: str
) -> None:
    """The usual `head -n` cut: the documented "truncated?" message, not an internal error."""
    path = tmp_path / "a.json"
    path.write_text(text)
    with pytest.raises(InputError, match=r"is not valid JSON at element \d+: .*truncated\?"):
        read(path)


def test_a_control_character_in_an_array_string_is_named_cleanly(tmp_path: Path) -> None:
    """The decoder's message loses its trailing "at" along with the position it introduced."""
    path = tmp_path / "a.json"
    path.write_text('[{"key": "a", "value": "\x01')
    with pytest.raises(InputError, match=r"at element 0: Invalid control character; fix"):
        read(path)


def test_a_trailing_comma_in_a_json_array_names_the_element_not_a_wrong_line(
    tmp_path: Path,
) -> None:
    """Structural errors still fail the file, naming the element without a misleading position."""
    path = tmp_path / "a.json"
    path.write_text('[{"key": "a"},\n]')
    with pytest.raises(InputError, match=r"at element 1: Expecting value; fix"):
        read(path)
