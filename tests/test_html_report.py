"""report --html: one self-contained page of the run history, its figures, its escaping, and a
real headless Chromium that renders it."""

import os
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from capstone import RunOptions, run
from capstone.cli import app
from capstone.config import load_config
from capstone.errors import CapstoneError, ConfigError
from capstone.html_report import (
    FATE_COLOURS,
    PipelineHistory,
    ReportData,
    fate_counts,
    parse_since,
    render_html,
)
from capstone.store import open_store
from capstone.store.url import redact
from capstone.summary import RunStatus, RunSummary
from tests.conftest import ROOT, change, event

HOSTILE = "<script>alert(1)</script>"

# -- a small DOM from the standard library's parser ------------------------------------------------

VOID = {"meta", "br", "img", "input", "link", "hr", "wbr", "col", "area", "base", "source"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: "Node | None") -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node | str] = []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def walk(self) -> Iterator["Node"]:
        for child in self.children:
            if isinstance(child, Node):
                yield child
                yield from child.walk()

    def find_all(self, tag: str | None = None, **attrs: str) -> list["Node"]:
        return [
            n
            for n in self.walk()
            if (tag is None or n.tag == tag)
            and all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]

    def find(self, tag: str | None = None, **attrs: str) -> "Node":
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, (tag, attrs, len(found))
        return found[0]


class Dom(HTMLParser):
    """The page as a tree of Nodes (SVG's self-closing elements included)."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.current = self.root
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.current.children.append(Node(tag, {k: v or "" for k, v in attrs}, self.current))

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        assert node is not None, f"stray </{tag}>"
        assert node.parent is not None
        self.current = node.parent

    def handle_data(self, data: str) -> None:
        self.current.children.append(data)


def rows(table: Node) -> list[list[str]]:
    """A table's body rows as lists of cell texts."""
    return [[td.text() for td in tr.find_all("td")] for tr in table.find("tbody").find_all("tr")]


def bars(section: Node) -> dict[int, dict[str, int]]:
    """The fate chart's bars: {run id: {fate: count}} (fates with no records have no rect)."""
    chart = section.find(data_part="fates")
    return {
        int(g.attrs["data-run"]): {
            r.attrs["data-fate"]: int(r.attrs["data-count"]) for r in g.find_all("rect")
        }
        for g in chart.find_all("g", **{"class": "run"})
    }


def tiles(dom: Node) -> dict[str, str]:
    """The figures at the top of a pipeline's section: {label: value}."""
    return {
        li.attrs["data-tile"]: li.find("b").text() for li in dom.find_all("li", **{"class": "tile"})
    }


# -- the history the tests look at -----------------------------------------------------------------


def hostile_file(folder: Path) -> str:
    """A broken JSON file whose path is <script>alert(1)</script>.json: its run fails."""
    (folder / "<script>alert(1)<").mkdir()
    path = folder / "<script>alert(1)</script>.json"
    path.write_text('[{"key": "a"}] {"key": "b"}')
    return str(path)


@pytest.fixture
def history(db: str, sample: str, write_jsonl: Any, tmp_path: Path) -> dict[str, str]:
    """Three runs of `events`: the sample (5 loaded, 2 rejected), a file with 2 late records,
    1 stale and 1 reject, and a broken file whose path and error hold a <script> tag."""
    run(sample, db)
    late = write_jsonl(
        [
            event("late-1", "2025-01-14T00:00:00"),
            event("late-2", "2025-01-14T01:00:00"),
            event("new-1", "2025-01-16T00:00:00"),
            event("new-1", "2025-01-15T23:00:00"),
            {"key": "no-ts", "name": "x", "value": 1},
        ],
        name="late.jsonl",
    )
    summary = run(late, db)
    assert (summary.loaded, summary.late, summary.stale, summary.rejected) == (3, 2, 1, 1)
    broken = hostile_file(tmp_path)
    with pytest.raises(CapstoneError):
        run(broken, db)
    return {"sample": sample, "late": late, "broken": broken}


def page(runner: CliRunner, db: str, tmp_path: Path, *options: str) -> tuple[str, Node]:
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["report", "--html", str(out), "--db", db, *options])
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    return text, Dom(text).root


# -- the figures ---------------------------------------------------------------------------------


class TestFigures:
    def test_the_fate_chart_has_a_bar_per_run_by_fate(
        self, runner: CliRunner, db: str, history: dict[str, str], tmp_path: Path
    ) -> None:
        """Each run is a bar whose segments are its loaded, late, stale, rejected and skipped records."""
        _, dom = page(runner, db, tmp_path)
        section = dom.find("section", data_pipeline="events")
        assert bars(section) == {
            1: {"loaded": 5, "rejected": 2},
            2: {"loaded": 1, "late": 2, "stale": 1, "rejected": 1},
            3: {},
        }
        failed = section.find(data_part="fates").find("path", data_status="failed")
        assert failed.parent is not None
        assert failed.parent.attrs["data-run"] == "3"

    def test_the_watermark_is_drawn_after_each_successful_run(
        self, runner: CliRunner, db: str, history: dict[str, str], tmp_path: Path
    ) -> None:
        """The watermark chart has one point per successful run, at that run's watermark."""
        _, dom = page(runner, db, tmp_path)
        points = dom.find(data_part="watermark").find_all("circle")
        assert [(p.attrs["data-run"], p.attrs["data-watermark"]) for p in points] == [
            ("1", "2025-01-15T12:00:00"),
            ("2", "2025-01-16T00:00:00"),
        ]
        assert tiles(dom)["watermark"] == "2025-01-16T00:00:00"

    def test_rejects_are_totalled_by_reason(
        self, runner: CliRunner, db: str, history: dict[str, str], tmp_path: Path
    ) -> None:
        """Rejects by reason add up the per-run reject counts of every run."""
        _, dom = page(runner, db, tmp_path)
        found = {
            g.attrs["data-reason"]: int(g.attrs["data-count"])
            for g in dom.find(data_part="reasons").find_all("g")
        }
        assert found == {"key.string_too_short": 1, "value.float_parsing": 1, "ts.missing": 1}

    def test_the_tiles_total_the_runs(
        self, runner: CliRunner, db: str, history: dict[str, str], tmp_path: Path
    ) -> None:
        """The figures at the top of a pipeline are the sums over its runs."""
        _, dom = page(runner, db, tmp_path)
        assert tiles(dom) | {"watermark": ""} == {
            "runs": "3",
            "succeeded": "2",
            "did not succeed": "1",
            "records read": "12",
            "loaded": "8",
            "late": "2",
            "rejected": "3",
            "watermark": "",
        }

    def test_the_slowest_runs_are_listed_longest_first(
        self, runner: CliRunner, db: str, history: dict[str, str], tmp_path: Path
    ) -> None:
        """The slowest runs table lists every run (3 < 10), by duration, longest first."""
        change(db, "UPDATE run_log SET duration_ms = 2500 WHERE run_id = 2")
        change(db, "UPDATE run_log SET duration_ms = 1000 WHERE run_id = 1")
        change(db, "UPDATE run_log SET duration_ms = 0 WHERE run_id = 3")
        _, dom = page(runner, db, tmp_path)
        table = rows(dom.find(data_part="slowest").find("table"))
        assert [(r[0], r[1], r[4], r[5], r[6]) for r in table] == [
            ("2", "success", "2.50 s", "5", "2"),
            ("1", "success", "1.00 s", "7", "7"),
            ("3", "failed", "0.00 s", "0", "-"),
        ]

    def test_failed_runs_are_listed_with_their_errors(
        self, runner: CliRunner, db: str, history: dict[str, str], tmp_path: Path
    ) -> None:
        """The runs that did not succeed are listed with status, source and error."""
        _, dom = page(runner, db, tmp_path)
        [row] = rows(dom.find(data_part="failed").find("table"))
        assert row[:2] == ["3", "failed"]
        assert row[3] == history["broken"]
        assert row[4].startswith(history["broken"])
        assert "has text after the closing ']'" in row[4]

    @pytest.mark.parametrize("status", ["interrupted", "abandoned"])
    def test_interrupted_and_abandoned_runs_are_listed_too(
        self, runner: CliRunner, db: str, history: dict[str, str], tmp_path: Path, status: str
    ) -> None:
        """Every run that did not succeed is listed and marked on the chart, not only failed ones."""
        change(db, f"UPDATE run_log SET status = '{status}' WHERE run_id = 3")
        _, dom = page(runner, db, tmp_path)
        assert [r[:2] for r in rows(dom.find(data_part="failed").find("table"))] == [["3", status]]
        assert dom.find(data_part="fates").find("path", data_status=status).parent is not None

    def test_the_files_loaded_are_the_manifest(
        self, runner: CliRunner, db: str, history: dict[str, str], tmp_path: Path
    ) -> None:
        """The files table lists each loaded file, newest first, with records and run."""
        _, dom = page(runner, db, tmp_path)
        table = rows(dom.find(data_part="files").find("table"))
        assert [(r[0], r[1], r[4]) for r in table] == [
            (history["late"], "5", "2"),
            (history["sample"], "7", "1"),
        ]

    def test_each_pipeline_has_its_own_section(
        self, runner: CliRunner, db: str, history: dict[str, str], tmp_path: Path
    ) -> None:
        """Two pipelines make two sections; --pipeline keeps one."""
        spec = load_config(ROOT / "capstone.toml").pipeline("orders")
        run(str(ROOT / "data" / "orders.jsonl"), db, RunOptions(pipeline="orders"), spec=spec)
        _, dom = page(runner, db, tmp_path)
        assert [s.attrs["data-pipeline"] for s in dom.find_all("section")] == ["events", "orders"]
        ids = [n.attrs["id"] for n in dom.walk() if "id" in n.attrs]
        assert len(ids) == len(set(ids)), "an id used twice"
        orders = dom.find("section", data_pipeline="orders")
        assert bars(orders) == {4: {"loaded": 6, "stale": 1, "rejected": 3}}
        assert set(bars(dom.find("section", data_pipeline="events"))) == {1, 2, 3}
        _, only = page(runner, db, tmp_path, "--pipeline", "orders")
        assert [s.attrs["data-pipeline"] for s in only.find_all("section")] == ["orders"]
        assert rows(only.find(data_part="files").find("table"))[0][0].endswith("orders.jsonl")

    def test_since_leaves_out_earlier_runs(
        self, runner: CliRunner, db: str, history: dict[str, str], tmp_path: Path
    ) -> None:
        """--since keeps runs started at or after it, and the files and rejects of those runs."""
        change(db, "UPDATE run_log SET started_at = '2020-01-01T00:00:00' WHERE run_id = 1")
        _, dom = page(runner, db, tmp_path, "--since", "2024-06-01")
        assert set(bars(dom)) == {2, 3}
        assert [r[4] for r in rows(dom.find(data_part="files").find("table"))] == ["2"]
        assert {g.attrs["data-reason"] for g in dom.find(data_part="reasons").find_all("g")} == {
            "ts.missing"
        }
        _, none = page(runner, db, tmp_path, "--since", "0s")
        assert none.find_all("section") == []
        assert "No runs logged" in none.find(id="no-runs").text()


# -- user data, self-containment, the command ----------------------------------------------------


class TestPage:
    def test_strings_from_the_database_are_escaped(
        self, runner: CliRunner, db: str, history: dict[str, str], tmp_path: Path
    ) -> None:
        """A <script> tag in a file name and an error shows as text and is never markup."""
        text, dom = page(runner, db, tmp_path)
        assert "<script" not in text.lower()
        assert dom.find_all("script") == []
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
        assert HOSTILE in dom.find(data_part="failed").text()

    def test_the_page_fetches_nothing(
        self, runner: CliRunner, db: str, history: dict[str, str], tmp_path: Path
    ) -> None:
        """No element loads a resource, and the page's CSP forbids the browser to fetch any."""
        text, dom = page(runner, db, tmp_path)
        assert all("src" not in n.attrs for n in dom.walk())
        assert dom.find_all("link") == []
        assert "http://" not in text
        assert "https://" not in text
        csp = dom.find("meta", http_equiv="Content-Security-Policy").attrs["content"]
        assert csp.startswith("default-src 'none'")

    def test_the_command_prints_the_path_and_writes_atomically(
        self, runner: CliRunner, db: str, history: dict[str, str], tmp_path: Path
    ) -> None:
        """The page replaces an older one by rename, leaves no temporary file, and says where it went."""
        out = tmp_path / "out" / "report.html"
        out.parent.mkdir()
        out.write_text("old")
        result = runner.invoke(app, ["report", "--html", str(out), "--db", db])
        assert result.exit_code == 0, result.output
        assert result.stdout == f"wrote {out}: 1 pipeline, 3 runs\n"
        assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
        assert os.listdir(out.parent) == ["report.html"]

    def test_a_dash_writes_the_page_to_stdout(
        self, runner: CliRunner, db: str, sample: str, tmp_path: Path, monkeypatch: Any
    ) -> None:
        """--html - prints the page itself, and writes no file named -."""
        run(sample, db)
        monkeypatch.chdir(tmp_path)
        result = runner.invoke(app, ["report", "--html", "-", "--db", db])
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("<!DOCTYPE html>")
        assert bars(Dom(result.stdout).root) == {1: {"loaded": 5, "rejected": 2}}
        assert not (tmp_path / "-").exists()

    def test_a_database_without_runs_gives_a_page_that_says_so(
        self, runner: CliRunner, db: str, tmp_path: Path
    ) -> None:
        """An initialised database with no runs still gets a page, saying there are none."""
        open_store(db).close()
        _, dom = page(runner, db, tmp_path)
        assert "No runs logged" in dom.find(id="no-runs").text()

    def test_the_page_names_the_database_without_its_password(
        self, runner: CliRunner, db: str, sample: str, tmp_path: Path
    ) -> None:
        """The page names the database as given, with any password in its URL hidden."""
        run(sample, db)
        text, dom = page(runner, db, tmp_path)
        assert dom.find("p", **{"class": "meta"}).find("code").text() == redact(db)
        if db.startswith("postgresql://"):
            password = db.split("//", 1)[1].split("@", 1)[0].split(":", 1)[1]
            assert password not in text


class TestRefusals:
    def test_html_with_json_or_run_is_a_usage_error(
        self, runner: CliRunner, db: str, sample: str, tmp_path: Path
    ) -> None:
        """--html writes every run's page: --json and --run with it exit 2 and name the option."""
        run(sample, db)
        out = str(tmp_path / "r.html")
        for extra, named in ((["--json"], "--json"), (["--run", "1"], "--run")):
            result = runner.invoke(app, ["report", "--html", out, "--db", db, *extra])
            assert result.exit_code == 2, result.output
            assert f"leave out {named}" in result.stderr
        assert not Path(out).exists()

    def test_since_without_html_is_a_usage_error(
        self, runner: CliRunner, db: str, sample: str
    ) -> None:
        """--since only filters the page; with the step table it exits 2."""
        run(sample, db)
        result = runner.invoke(app, ["report", "--since", "30d", "--db", db])
        assert result.exit_code == 2
        assert "--since goes with --html" in result.stderr

    def test_an_unreadable_since_is_a_usage_error(
        self, runner: CliRunner, db: str, sample: str, tmp_path: Path
    ) -> None:
        """A --since that is neither a date nor a duration exits 2 with the forms it takes."""
        run(sample, db)
        result = runner.invoke(
            app, ["report", "--html", str(tmp_path / "r.html"), "--since", "last week", "--db", db]
        )
        assert result.exit_code == 2
        assert result.stderr.startswith("capstone: error: cannot read --since 'last week'")

    def test_an_unwritable_place_is_refused_before_reading(
        self, runner: CliRunner, db: str, sample: str, tmp_path: Path
    ) -> None:
        """--html into a missing folder, or onto the database itself, exits 2 with the reason."""
        run(sample, db)
        missing = runner.invoke(
            app, ["report", "--html", str(tmp_path / "no" / "r.html"), "--db", db]
        )
        assert missing.exit_code == 2
        assert "not a writable folder" in missing.stderr
        if not db.startswith("postgresql://"):
            itself = runner.invoke(app, ["report", "--html", db, "--db", db])
            assert itself.exit_code == 2
            assert "would overwrite the database" in itself.stderr

    def test_a_missing_database_is_not_created(self, runner: CliRunner, tmp_path: Path) -> None:
        """report --html on a database that does not exist exits 1 and creates nothing."""
        db = tmp_path / "none.db"
        result = runner.invoke(app, ["report", "--html", str(tmp_path / "r.html"), "--db", str(db)])
        assert result.exit_code == 1
        assert result.stderr.startswith("capstone: error: ")
        assert not db.exists()
        assert not (tmp_path / "r.html").exists()


# -- the library ----------------------------------------------------------------------------------


class TestLibrary:
    def test_fates_add_up_to_the_input(self) -> None:
        """A bar's segments add up to the run's input records: late is taken out of loaded."""
        summary = RunSummary(
            run_id=1, pipeline="p", status="success", input_records=10, staged=7, loaded=6,
            late=2, stale=1, rejected=2, skipped=1,
        )  # fmt: skip
        counts = fate_counts(summary)
        assert counts == {"loaded": 4, "late": 2, "stale": 1, "rejected": 2, "skipped": 1}
        assert sum(counts.values()) == summary.input_records
        assert list(counts) == list(FATE_COLOURS)

    def test_render_escapes_every_string(self) -> None:
        """Pipeline names, sources, errors, reasons and the database name are escaped, control
        characters shown as escapes."""
        bad = RunSummary(
            run_id=1, pipeline=HOSTILE, status="failed", source=HOSTILE,
            error=f"{HOSTILE}\x1b[31m", started_at="2025-01-01T00:00:00",
        )  # fmt: skip
        ok = bad.model_copy(update={"run_id": 2, "status": RunStatus.SUCCESS, "error": None})
        data = ReportData(
            database=HOSTILE,
            generated_at="2025-01-02T00:00:00",
            pipeline=HOSTILE,
            pipelines=[
                PipelineHistory(
                    pipeline=HOSTILE, runs=[bad, ok], reasons={HOSTILE: 3}, files=[], watermark=None
                )
            ],
        )
        text = render_html(data)
        assert "<script" not in text
        assert "\x1b" not in text
        assert "\\x1b[31m" in text
        dom = Dom(text).root
        assert dom.find("section").attrs["data-pipeline"] == HOSTILE
        assert dom.find("g", data_reason=HOSTILE).attrs["data-count"] == "3"

    def test_since_reads_dates_times_and_durations(self) -> None:
        """--since takes a date, a time (offsets converted to UTC) or a duration back from now."""
        now = datetime(2025, 3, 1, 12, 0)
        assert parse_since("2025-01-31") == datetime(2025, 1, 31)
        assert parse_since("2025-01-31T12:00+02:00") == datetime(2025, 1, 31, 10, 0)
        assert parse_since("30d", now) == datetime(2025, 1, 30, 12, 0)
        assert parse_since("1h30m", now) == datetime(2025, 3, 1, 10, 30)
        for bad in ("", "yesterday", "2025-13-01"):
            with pytest.raises(ConfigError):
                parse_since(bad, now)


# -- a real browser -------------------------------------------------------------------------------


def chromium() -> str:
    """The Chromium binary, or a skip (a failure when CAPSTONE_REQUIRE_BROWSER is set)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    missing = "the browser test needs Chromium: apt-get install chromium"
    if os.environ.get("CAPSTONE_REQUIRE_BROWSER"):
        pytest.fail(f"CAPSTONE_REQUIRE_BROWSER is set: {missing}", pytrace=False)
    pytest.skip(missing)


def headless(binary: str, profile: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    # Root needs --no-sandbox; a profile of its own keeps parallel test sessions apart.
    return subprocess.run(
        [
            binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *arguments,
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def png_pixels(data: bytes) -> Iterator[tuple[int, ...]]:
    """The pixels of an 8-bit RGB or RGBA PNG, row by row from the top (zlib and the five PNG
    filters; enough to look at a screenshot without an imaging library)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    offset, chunks, header = 8, [], b""
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        offset += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8, depth
    assert colour in (2, 6), colour
    step = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * step
    assert len(raw) == height * (stride + 1), "truncated image data"
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - step] if i >= step else 0
            up, corner = previous[i], previous[i - step] if i >= step else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                best = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + best) & 0xFF
        yield from (tuple(line[x : x + 3]) for x in range(0, stride, step))
        previous = line


@pytest.mark.slow
def test_chromium_renders_the_page_without_console_errors(
    runner: CliRunner, db_path: str, history_sqlite: Path, tmp_path: Path
) -> None:
    """Headless Chromium renders the page with its charts, logs no console message (no script
    ran, nothing was fetched), and its screenshot is a PNG with text and the bars' blue."""
    binary = chromium()
    url = history_sqlite.as_uri()
    dom_run = headless(binary, tmp_path / "profile-dom", "--dump-dom", url)
    assert dom_run.returncode == 0, dom_run.stderr[-2000:]
    rendered = Dom(dom_run.stdout).root
    assert len(rendered.find_all("svg")) == 3
    assert rendered.find_all("script") == []
    assert bars(rendered) == {1: {"loaded": 5, "rejected": 2}, 2: {"late": 1, "rejected": 1}, 3: {}}
    shot = tmp_path / "shot.png"
    shot_run = headless(
        binary, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,2000", url
    )
    assert shot_run.returncode == 0, shot_run.stderr[-2000:]
    console = [
        line
        for line in (dom_run.stderr + shot_run.stderr).splitlines()
        if ":CONSOLE" in line or "Uncaught" in line
    ]
    assert console == []
    data = shot.read_bytes()
    assert struct.unpack(">II", data[16:24]) == (1280, 2000)
    blue = tuple(int(FATE_COLOURS["loaded"][i : i + 2], 16) for i in (1, 3, 5))
    seen: set[tuple[int, ...]] = set()
    for pixel in png_pixels(data):
        seen.add(pixel)
        if blue in seen and len(seen) > 2:
            break
    assert len(seen) > 2, seen
    assert blue in seen, "the fate chart's bars are not on the screenshot"


@pytest.fixture
def history_sqlite(
    runner: CliRunner, db_path: str, sample: str, write_jsonl: Any, tmp_path: Path
) -> Path:
    """The page of a SQLite history like `history`'s: a good run, a late one, a hostile failure."""
    run(sample, db_path)
    run(write_jsonl([event("late-1", "2025-01-14T00:00:00"), {"key": "x"}]), db_path)
    with pytest.raises(CapstoneError):
        run(hostile_file(tmp_path), db_path)
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["report", "--html", str(out), "--db", db_path])
    assert result.exit_code == 0, result.output
    return out
