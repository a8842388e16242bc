"""Input expansion: files, stdin, folders and globs in a stable order, each file once; and the
content fingerprint."""

import hashlib
import os
import threading
from pathlib import Path

import orjson
import pytest

from capstone import run
from capstone.errors import ConfigError, InputError
from capstone.inputs import expand_inputs, fingerprint
from capstone.sources import SourceFile
from tests.conftest import event, fetch


@pytest.fixture
def landing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A landing folder of daily files, some nested, with hidden and unfinished files beside
    them; the working directory is its parent so paths read as a user types them."""
    for name in [
        "landing/2025-01-02/b.jsonl.gz",
        "landing/2025-01-02/a.jsonl.gz",
        "landing/2025-01-01/z.csv",
        "landing/2025-01-01/deep/er/x.jsonl",
        "landing/top.jsonl",
        "landing/.hidden.jsonl",
        "landing/.cache/c.jsonl",
        "landing/2025-01-01/y.jsonl.tmp",
        "landing/2025-01-01/y.jsonl.part",
        "landing/2025-01-01/y.jsonl~",
    ]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "landing"


def test_a_plain_file_is_taken_as_given(landing: Path) -> None:
    """A file's path comes back exactly as it was written, even one with a skipped suffix."""
    assert expand_inputs(["landing/top.jsonl", "landing/2025-01-01/y.jsonl.tmp"]) == [
        "landing/top.jsonl",
        "landing/2025-01-01/y.jsonl.tmp",
    ]


def test_standard_input_stays_a_dash(landing: Path) -> None:
    """`-` is standard input, in its place among the other values."""
    assert expand_inputs(["landing/top.jsonl", "-"]) == ["landing/top.jsonl", "-"]


def test_a_folder_gives_its_files_at_any_depth_in_name_order(landing: Path) -> None:
    """A folder's regular files, recursively, sorted by path component; hidden files and
    folders and names ending .tmp, .part or ~ are left out."""
    assert expand_inputs(["landing"]) == [
        "landing/2025-01-01/deep/er/x.jsonl",
        "landing/2025-01-01/z.csv",
        "landing/2025-01-02/a.jsonl.gz",
        "landing/2025-01-02/b.jsonl.gz",
        "landing/top.jsonl",
    ]


def test_a_folder_skips_what_is_not_a_regular_file(landing: Path) -> None:
    """A named pipe in a folder is not read (it could block for ever)."""
    os.mkfifo(landing / "2025-01-02" / "pipe.jsonl")
    assert "landing/2025-01-02/pipe.jsonl" not in expand_inputs(["landing"])


def test_a_glob_gives_its_matches_in_name_order(landing: Path) -> None:
    """A quoted pattern is expanded by capstone, its matches sorted."""
    assert expand_inputs(["landing/2025-*/*.jsonl.gz"]) == [
        "landing/2025-01-02/a.jsonl.gz",
        "landing/2025-01-02/b.jsonl.gz",
    ]


def test_double_star_matches_any_depth(landing: Path) -> None:
    """`**` matches folders at any depth (none too), hidden folders excepted."""
    assert expand_inputs(["landing/**/*.jsonl"]) == [
        "landing/2025-01-01/deep/er/x.jsonl",
        "landing/top.jsonl",
    ]


def test_a_glob_matching_folders_gives_their_files(landing: Path) -> None:
    """A pattern naming day folders loads the files inside them."""
    assert expand_inputs(["landing/2025-01-0[2-9]"]) == [
        "landing/2025-01-02/a.jsonl.gz",
        "landing/2025-01-02/b.jsonl.gz",
    ]


def test_a_glob_leaves_out_unfinished_files(landing: Path) -> None:
    """A broad pattern does not pick up a download still being written."""
    assert expand_inputs(["landing/2025-01-01/*.*"]) == ["landing/2025-01-01/z.csv"]


def test_a_glob_that_matches_nothing_is_a_config_error_naming_it(landing: Path) -> None:
    """No match is exit 2 with the pattern in the message, never a run of nothing."""
    with pytest.raises(
        ConfigError, match=r"--input 'landing/2024-\*/\*\.gz' matches no file"
    ) as error:
        expand_inputs(["landing/2024-*/*.gz"])
    assert error.value.exit_code == 2


def test_a_folder_with_nothing_to_load_is_a_config_error_naming_it(landing: Path) -> None:
    """A folder holding only hidden or unfinished files is refused, naming the folder."""
    (landing / "empty" / ".git").mkdir(parents=True)
    (landing / "empty" / "part.jsonl.part").write_text("{}\n")
    with pytest.raises(ConfigError, match="--input landing/empty: the folder holds no file"):
        expand_inputs(["landing/empty"])


def test_a_missing_file_is_the_same_input_error_as_when_opening_it(landing: Path) -> None:
    """A missing plain path gives the InputError the reader gives for it."""
    with pytest.raises(InputError) as expanded:
        expand_inputs(["landing/top.jsonl", "landing/nope.jsonl"])
    with pytest.raises(InputError) as opened, SourceFile("landing/nope.jsonl"):
        pass
    assert str(expanded.value) == str(opened.value)


def test_an_existing_file_whose_name_looks_like_a_glob_is_a_file(landing: Path) -> None:
    """`[1].jsonl` that exists is that file, not a pattern for `1.jsonl`."""
    (landing / "[1].jsonl").write_text("{}\n")
    assert expand_inputs(["landing/[1].jsonl"]) == ["landing/[1].jsonl"]


def test_values_keep_their_order_given(landing: Path) -> None:
    """Files come in the order of the values; only inside a folder or glob are they sorted."""
    assert expand_inputs(["landing/top.jsonl", "landing/2025-01-02"]) == [
        "landing/top.jsonl",
        "landing/2025-01-02/a.jsonl.gz",
        "landing/2025-01-02/b.jsonl.gz",
    ]


def test_a_file_named_twice_is_kept_once_at_its_first_place(landing: Path) -> None:
    """Two patterns, a folder, `./` spellings and a symbolic link that reach one file give it once."""
    (landing / "zz-link.jsonl").symlink_to(landing / "top.jsonl")
    assert expand_inputs(
        ["landing/*.jsonl", "./landing/top.jsonl", "landing", "landing/2025-01-02/*.gz", "-", "-"]
    ) == [
        "landing/top.jsonl",
        "landing/2025-01-01/deep/er/x.jsonl",
        "landing/2025-01-01/z.csv",
        "landing/2025-01-02/a.jsonl.gz",
        "landing/2025-01-02/b.jsonl.gz",
        "-",
    ]


def test_fingerprint_is_the_sha256_of_the_bytes_whatever_the_name(tmp_path: Path) -> None:
    """The fingerprint is SHA-256 of the stored bytes, read in chunks, equal for a renamed copy."""
    data = os.urandom(3 << 20)
    first, renamed = tmp_path / "a.jsonl.gz", tmp_path / "b.bin"
    first.write_bytes(data)
    renamed.write_bytes(data)
    assert fingerprint(str(first)) == fingerprint(str(renamed)) == hashlib.sha256(data).hexdigest()


def test_fingerprint_of_a_missing_file_is_the_missing_file_error(tmp_path: Path) -> None:
    """A file gone between listing and fingerprinting says so, as for --input."""
    with pytest.raises(InputError, match="does not exist; check the --input path"):
        fingerprint(str(tmp_path / "gone.jsonl"))


def test_a_named_pipe_loads_what_is_written_into_it(tmp_path: Path, db_path: str) -> None:
    """A FIFO is read once, by the run: it is not hashed first (which would consume it) and gets
    no manifest entry, like standard input."""
    pipe = tmp_path / "feed.jsonl"
    os.mkfifo(pipe)
    lines = "".join(
        orjson.dumps(event(f"k{i}", "2025-03-01T00:00:00")).decode() + "\n" for i in range(20)
    )

    def write() -> None:
        with pipe.open("w") as fh:
            fh.write(lines)

    writer = threading.Thread(target=write)
    writer.start()
    summary = run(str(pipe), db_path)
    writer.join()
    assert (summary.input_records, summary.loaded) == (20, 20)
    assert fetch(db_path, "SELECT COUNT(*) FROM files") == [(0,)]
