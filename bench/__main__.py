"""`python -m bench`: capstone against the raw-sqlite3 floor, on seeded synthetic event files.

For each size N it generates the data once (cached in bench/out/data), then runs every scenario
with capstone and with the floor (bench/floor.py), alternating, each measurement in a fresh process
(bench/_child.py) that reports its own peak RSS. It prints the median seconds of the repeats,
records/s, the capstone/floor ratio and peak RSS, checks issue 3's targets, and cleans up every
database it made.

Scenarios: a first load of JSON Lines, of a JSON array and of CSV into a fresh database; an
incremental load of 10k newer records into the database the JSON Lines first load made, against the
same 10k records into an empty database; and a feed (issue 15): the N records split into a folder
of 10 gzip files loaded with `run_many` (one run per file), against the same records in one plain
file, then the folder again (every file skipped by the file manifest). The feed is capstone alone:
the floor reads one plain file.

    python -m bench                         # N = 100k and 1M
    python -m bench --sizes 100k --repeat 5 # quicker
    python -m bench --with-5m               # adds a 5M JSON Lines first load (the RSS target)
    python -m bench --json                  # figures as JSON on stdout
    python -m bench --db-url postgresql://user:pw@host/db   # capstone on PostgreSQL
"""

import argparse
import contextlib
import gzip
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from bench._child import COUNTS
from bench.generate import GenFormat, Spec, base_spec, incremental_spec, write

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
TOOLS = ("capstone", "floor")
LARGE = 1_000_000
FIVE_M = 5_000_000
SCENARIOS = ("jsonl", "json", "csv", "incremental", "feeds")
FEED_FILES = 10
LABELS = {
    "jsonl": "first load, JSON Lines",
    "json": "first load, JSON array",
    "csv": "first load, CSV",
}


class BenchError(Exception):
    """A measurement failed; the message says which one and why."""


@dataclass
class Result:
    """All repeats of one tool on one scenario."""

    scenario: str
    label: str
    n: int
    tool: str
    records: int
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    lineage_bytes: list[float] = field(default_factory=list)
    """Bytes of lineage (rows and indexes, from dbstat) per input record, SQLite first loads."""
    counts: dict[str, Any] | None = None
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None

    @property
    def median_cpu(self) -> float | None:
        return statistics.median(self.cpu) if self.cpu else None

    @property
    def median_wall(self) -> float | None:
        return statistics.median(self.wall) if self.wall else None

    @property
    def rate(self) -> float | None:
        median = self.median
        return self.records / median if median else None

    @property
    def peak_mb(self) -> float | None:
        return max(self.rss_mb) if self.rss_mb else None

    @property
    def lineage_per_record(self) -> float | None:
        return statistics.median(self.lineage_bytes) if self.lineage_bytes else None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "median_seconds": self.median,
            "median_wall": self.median_wall,
            "median_cpu": self.median_cpu,
            "records_per_second": self.rate,
            "peak_rss_mb": self.peak_mb,
            "lineage_bytes_per_record": self.lineage_per_record,
        }


# -- command line ----------------------------------------------------------------------------------


def _size(text: str) -> int:
    text = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    try:
        value = int(float(text.rstrip("km")) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size; use 100000, 100k or 1m"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError("sizes must be at least 1")
    return value


def _sizes(text: str) -> list[int]:
    return [_size(part) for part in text.split(",") if part.strip()]


def _scenarios(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {unknown[0]!r}; choose from {SCENARIOS}"
        )
    return chosen


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark capstone against the raw-sqlite3 floor on seeded synthetic files.",
    )
    add = parser.add_argument
    add(
        "--sizes", type=_sizes, default=[100_000, LARGE], help="comma-separated N (default 100k,1m)"
    )
    add(
        "--with-5m", action="store_true", help="also a 5M-record JSON Lines first load (RSS target)"
    )
    add("--scenarios", type=_scenarios, default=list(SCENARIOS), help=f"subset of {SCENARIOS}")
    add("--repeat", type=int, default=3, help="measurements per tool and scenario (median shown)")
    add(
        "--repeat-large",
        type=int,
        default=None,
        help=f"measurements for N >= {LARGE:,} (default: --repeat)",
    )
    add("--incremental-size", type=_size, default=10_000, help="records of the incremental load")
    add("--batch-size", type=int, default=10_000, help="batch size passed to both tools")
    add("--seed", type=int, default=42)
    add("--db-url", help="run capstone on this postgresql:// database (the floor stays on SQLite)")
    add(
        "--via", choices=("lib", "cli"), default="lib", help="call capstone.run() or `capstone run`"
    )
    add(
        "--capstone-src",
        type=Path,
        help="import capstone from this folder (e.g. a snapshot of another commit)",
    )
    add(
        "--baseline-src",
        type=Path,
        help="also measure capstone from this folder as `baseline` (e.g. a checkout of an older "
        "commit), side by side; the table shows capstone's speed-up over it",
    )
    add(
        "--out", type=Path, default=OUT, help="data cache and scratch databases (default bench/out)"
    )
    add("--timeout", type=float, default=3600, help="seconds before a measurement is abandoned")
    add("--keep", action="store_true", help="keep the scratch databases")
    add("--json", action="store_true", help="print the figures as JSON instead of a table")
    add(
        "--render",
        type=Path,
        metavar="FILE",
        help="print the table of a saved --json output, then exit",
    )
    return parser


# -- environment -----------------------------------------------------------------------------------


def _tools(args: argparse.Namespace) -> tuple[str, ...]:
    """The tools measured: capstone and the floor, and the baseline capstone if given."""
    return (*TOOLS, "baseline") if args.baseline_src else TOOLS


def _child_env(args: argparse.Namespace, tool: str = "capstone") -> dict[str, str]:
    source = args.baseline_src if tool == "baseline" else args.capstone_src
    paths = [str(source.resolve())] if source else []
    paths.append(str(ROOT))
    return os.environ | {"PYTHONPATH": os.pathsep.join(paths), "PYTHONDONTWRITEBYTECODE": "1"}


def _git(*command: str) -> str:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        done = subprocess.run(
            ["git", "-C", str(ROOT), *command], capture_output=True, check=True, text=True
        )
        return done.stdout.strip()
    return ""


def _baseline(args: argparse.Namespace) -> str | None:
    """The baseline's folder and, when it is a git checkout, its commit."""
    if not args.baseline_src:
        return None
    folder = args.baseline_src.resolve()
    done = subprocess.run(
        ["git", "-C", str(folder), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return f"{folder} (git {done.stdout.strip()})" if done.returncode == 0 else str(folder)


def _machine(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    probe = subprocess.run(
        [sys.executable, "-c", "import capstone; print(capstone.__version__, capstone.__file__)"],
        capture_output=True,
        text=True,
        env=_child_env(args),
        cwd=work,
        check=False,
    )
    if probe.returncode != 0:
        raise BenchError(f"cannot import capstone: {probe.stderr.strip().splitlines()[-1:]}")
    version, location = probe.stdout.split()
    source = str(Path(location).parent.parent)
    commit = dirty = None
    if not args.capstone_src:  # capstone from this repository: which commit, and is it edited?
        commit = _git("rev-parse", "--short", "HEAD") or None
        dirty = bool(_git("status", "--porcelain", "--", "capstone"))
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "platform": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "pydantic": metadata.version("pydantic"),
        "orjson": metadata.version("orjson"),
        "capstone": version,
        "capstone_source": source,
        "baseline_source": _baseline(args),
        "git_commit": commit,
        "capstone_uncommitted_changes": dirty,
        "capstone_backend": "postgresql" if args.db_url else "sqlite",
        "floor_backend": "sqlite",
        "via": args.via,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "load_before": os.getloadavg()[0],
    }


# -- data ------------------------------------------------------------------------------------------


def _data(spec: Spec, fmt: GenFormat, folder: Path) -> Path:
    """The spec's file in `fmt`, generated on first use and cached by the spec's identity."""
    path = folder / f"events-{spec.tag}.{fmt}"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        clock = time.perf_counter()
        summary = write(spec, path, fmt)
        _log(
            f"generated {path.name}: {summary.records:,} records, {summary.invalid:,} invalid, "
            f"{summary.bytes / 1e6:,.0f} MB in {time.perf_counter() - clock:.1f} s"
        )
    return path


def _feed_data(spec: Spec, folder: Path) -> Path:
    """The spec's JSON Lines records cut into FEED_FILES gzip files of equal record counts, in a
    folder of their own (cached); record order is the plain file's."""
    plain = _data(spec, "jsonl", folder)
    feed = folder / f"feed-{spec.tag}-{FEED_FILES}gz"
    if feed.exists():
        return feed
    clock = time.perf_counter()
    partial = feed.with_name(feed.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    per_file = -(-spec.n // FEED_FILES)
    with plain.open("rb") as source:
        for part in range(FEED_FILES):
            # Level 6, as the gzip command writes: the level a landing folder usually holds.
            name = partial / f"events-{part + 1:02d}.jsonl.gz"
            with gzip.open(name, "wb", compresslevel=6) as out:
                for _ in range(per_file):
                    line = source.readline()
                    if not line:
                        break
                    out.write(line)
    partial.rename(feed)
    size = sum(path.stat().st_size for path in feed.iterdir())
    _log(
        f"generated {feed.name}: {FEED_FILES} gzip files, {size / 1e6:,.0f} MB "
        f"in {time.perf_counter() - clock:.1f} s"
    )
    return feed


# -- databases -------------------------------------------------------------------------------------


def _remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()


def _copy_sqlite(source: Path, target: Path) -> None:
    _remove_sqlite(target)
    for suffix in ("", "-wal"):
        if Path(f"{source}{suffix}").exists():
            shutil.copyfile(f"{source}{suffix}", f"{target}{suffix}")


def _move_sqlite(source: Path, target: Path) -> None:
    _remove_sqlite(target)
    for suffix in ("", "-wal"):
        if Path(f"{source}{suffix}").exists():
            Path(f"{source}{suffix}").replace(f"{target}{suffix}")


class Databases:
    """Hands out scratch databases: SQLite files in the work folder, or PostgreSQL schemas."""

    def __init__(self, work: Path, pg_url: str | None, keep: bool) -> None:
        self.work, self.pg_url, self.keep = work, pg_url, keep
        self._schemas: list[str] = []

    def uses_postgres(self, tool: str) -> bool:
        return tool in ("capstone", "baseline") and self.pg_url is not None

    @contextlib.contextmanager
    def fresh(self, tool: str, name: str) -> Iterator[str]:
        """A new empty database, removed afterwards (unless --keep)."""
        if self.uses_postgres(tool):
            url = self._new_schema(name)
            try:
                yield url
            finally:
                if not self.keep:
                    self._drop_schema(url)
            return
        path = self.work / f"{tool}-{name}.db"
        _remove_sqlite(path)
        try:
            yield str(path)
        finally:
            if not self.keep:
                _remove_sqlite(path)

    def _new_schema(self, name: str) -> str:
        assert self.pg_url is not None
        schema = f"bench_{name.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
        try:
            import psycopg

            with psycopg.connect(self.pg_url, autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA "{schema}"')
        except ImportError:
            raise BenchError("--db-url needs psycopg: pip install 'capstone[postgres]'") from None
        except psycopg.Error as error:
            raise BenchError(f"cannot create a scratch schema on --db-url: {error}") from None
        parts = urlsplit(self.pg_url)
        query = dict(parse_qsl(parts.query)) | {"options": f"-csearch_path={schema}"}
        return urlunsplit(parts._replace(query=urlencode(query)))

    def _drop_schema(self, url: str) -> None:
        import psycopg

        assert self.pg_url is not None
        schema = dict(parse_qsl(urlsplit(url).query))["options"].split("=", 1)[1]
        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- measuring -------------------------------------------------------------------------------------


def _lineage_bytes(db: str) -> int:
    """Bytes the lineage rows and their indexes take in a SQLite database (dbstat)."""
    conn = sqlite3.connect(db)
    try:
        row = conn.execute(
            "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name IN (SELECT name FROM "
            "sqlite_schema WHERE type IN ('table', 'index') AND tbl_name LIKE 'lineage%')"
        ).fetchone()
    finally:
        conn.close()
    return int(row[0])


def _log(message: str) -> None:
    sys.stderr.write(f"bench: {message}\n")
    sys.stderr.flush()


def _child(
    args: argparse.Namespace,
    tool: str,
    input_path: Path,
    fmt: str,
    db: str,
    work: Path,
    *,
    feed: bool = False,
) -> dict[str, Any]:
    """Run one load in a fresh process and return its report (seconds, maxrss_kb, counts, wall);
    with `feed`, `input_path` is a folder loaded with `run_many`."""
    measured = "capstone" if tool == "baseline" else tool
    command = [sys.executable, "-m", "bench._child", measured, str(input_path), db]
    command += ["--format", fmt]
    command += ["--batch-size", str(args.batch_size), "--via", args.via]
    command += ["--feed"] if feed else []
    clock = time.perf_counter()
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            env=_child_env(args, tool),
            cwd=work,
            timeout=args.timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"gave up after {args.timeout:.0f} s (raise --timeout)") from None
    wall = time.perf_counter() - clock
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    try:
        report: dict[str, Any] = orjson.loads(lines[-1])
    except (IndexError, orjson.JSONDecodeError):
        stderr = done.stderr.decode(errors="replace").strip()
        raise BenchError(
            f"the measuring process exited with {done.returncode} and no report"
            + (" (killed: out of memory?)" if done.returncode < 0 else "")
            + (f": {stderr[-1500:]}" if stderr else "")
        ) from None
    if not report.get("ok"):
        raise BenchError(f"{report.get('error')}\n{report.get('detail', '').rstrip()}")
    return report | {"wall": wall}


class Bench:
    """Runs the scenarios and collects results."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.dbs = Databases(work, args.db_url, args.keep)
        self.results: list[Result] = []
        self.bases: dict[tuple[str, int], Path] = {}
        """Per (tool, N): a SQLite database holding the N-record JSON Lines load (for increments)."""

    def repeats(self, n: int) -> int:
        if n >= LARGE and self.args.repeat_large is not None:
            return int(self.args.repeat_large)
        return int(self.args.repeat)

    def measure(
        self,
        result: Result,
        input_path: Path,
        fmt: str,
        repeat: int,
        base: Path | None = None,
        base_input: Path | None = None,
        keep_as_base: bool = False,
    ) -> None:
        """One measurement of `result.tool`, on a fresh database or a copy of `base`."""
        tool, args = result.tool, self.args
        name = f"{result.scenario}-{result.n}-{repeat}"
        with self.dbs.fresh(tool, name) as db:
            if base is not None:
                _copy_sqlite(base, Path(db))
            elif base_input is not None:  # PostgreSQL: load the base again (not timed)
                _child(args, tool, base_input, "jsonl", db, self.work)
            os.sync()  # the previous load's writes are flushed before this one starts
            report = _child(args, tool, input_path, fmt, db, self.work)
            if base is None and base_input is None and not self.dbs.uses_postgres(tool):
                result.lineage_bytes.append(_lineage_bytes(db) / result.records)
            if keep_as_base and not self.dbs.uses_postgres(tool):
                kept = self.work / f"{tool}-base-{result.n}.db"
                _move_sqlite(Path(db), kept)
                self.bases[tool, result.n] = kept
        self.record(result, report, repeat)

    def record(self, result: Result, report: dict[str, Any], repeat: int) -> None:
        """Add one measurement's report to `result` and log it."""
        tool = result.tool
        result.seconds.append(report["seconds"])
        result.cpu.append(report["cpu"])
        result.wall.append(report["wall"])
        result.rss_mb.append(report["maxrss_kb"] / 1024)
        result.counts = report["counts"]
        _log(
            f"N={result.n:,} {result.label} · {tool} #{repeat + 1}: {report['seconds']:.2f} s "
            f"(cpu {report['cpu']:.2f} s, wall {report['wall']:.2f} s), "
            f"{report['maxrss_kb'] / 1024:.0f} MB"
        )

    def scenario(
        self,
        scenario: str,
        label: str,
        n: int,
        records: int,
        input_path: Path,
        fmt: str,
        *,
        base_n: int | None = None,
        keep_base: bool = False,
    ) -> None:
        """Every repeat of both tools on one scenario, alternating tools to spread drift."""
        tools = _tools(self.args)
        pair = {tool: Result(scenario, label, n, tool, records) for tool in tools}
        repeats = self.repeats(n)
        for repeat in range(repeats):
            for tool in tools:
                result = pair[tool]
                if result.error is not None:
                    continue
                base = base_input = None
                try:
                    if base_n is not None and self.dbs.uses_postgres(tool):
                        base_input = self.base_input(base_n)
                    elif base_n is not None:
                        base = self.base(tool, base_n)
                    self.measure(
                        result,
                        input_path,
                        fmt,
                        repeat,
                        base,
                        base_input,
                        keep_as_base=keep_base and repeat == repeats - 1,
                    )
                except BenchError as error:
                    result.error = str(error)
                    _log(f"N={n:,} {label} · {tool} FAILED: {error}")
        self.results.extend(pair.values())
        ours, floor = pair["capstone"].counts, pair["floor"].counts
        if ours and floor and ours != floor:
            differing = {key: (ours.get(key), floor.get(key)) for key in COUNTS}
            differing = {key: pair for key, pair in differing.items() if pair[0] != pair[1]}
            _log(f"WARNING: N={n:,} {label}: capstone and floor counts differ: {differing}")

    def feeds(self, n: int) -> None:
        """The feed scenario: the same N records as one plain file and as a folder of gzip files
        (a fresh database each), then the folder again into the database it filled. Repeats
        alternate the two loads so drift spreads over both."""
        spec, data = base_spec(n, self.args.seed), self.args.out / "data"
        plain, folder = _data(spec, "jsonl", data), _feed_data(spec, data)
        each = _short(-(-n // FEED_FILES))
        plain_result = Result(
            "feed_plain", f"feed: {_short(n)} in one plain file", n, "capstone", n
        )
        folder_result = Result("feed", f"feed: {FEED_FILES} gzip files of {each}", n, "capstone", n)
        rerun_result = Result(
            "feed_rerun", f"feed: the {FEED_FILES} files again (skipped)", n, "capstone", n
        )
        trio = (plain_result, folder_result, rerun_result)
        for repeat in range(self.repeats(n)):
            try:
                with self.dbs.fresh("capstone", f"feed-plain-{n}-{repeat}") as db:
                    os.sync()
                    report = _child(self.args, "capstone", plain, "jsonl", db, self.work)
                    self.record(plain_result, report, repeat)
                with self.dbs.fresh("capstone", f"feed-{n}-{repeat}") as db:
                    os.sync()
                    report = _child(
                        self.args, "capstone", folder, "jsonl", db, self.work, feed=True
                    )
                    self.record(folder_result, report, repeat)
                    os.sync()
                    report = _child(
                        self.args, "capstone", folder, "jsonl", db, self.work, feed=True
                    )
                    self.record(rerun_result, report, repeat)
            except BenchError as error:
                for result in trio:
                    result.error = result.error or str(error)
                _log(f"N={n:,} feed FAILED: {error}")
                break
        self.results.extend(trio)

    def base_input(self, n: int) -> Path:
        return _data(base_spec(n, self.args.seed), "jsonl", self.args.out / "data")

    def base(self, tool: str, n: int) -> Path:
        """The tool's database after a first load of the N-record JSON Lines file."""
        if (tool, n) not in self.bases:
            path = self.work / f"{tool}-base-{n}.db"
            _remove_sqlite(path)
            _log(f"N={n:,}: {tool} loads the base database for the incremental scenario")
            _child(self.args, tool, self.base_input(n), "jsonl", str(path), self.work)
            self.bases[tool, n] = path
        return self.bases[tool, n]

    def run(self, n: int, scenarios: list[str]) -> None:
        args, data = self.args, self.args.out / "data"
        spec = base_spec(n, args.seed)
        for fmt in ("jsonl", "json", "csv"):
            if fmt in scenarios:
                path = _data(spec, fmt, data)
                keep = fmt == "jsonl" and "incremental" in scenarios
                self.scenario(fmt, LABELS[fmt], n, n, path, fmt, keep_base=keep)
        if "incremental" in scenarios:
            size = args.incremental_size
            inc = _data(incremental_spec(spec, size), "jsonl", data)
            label = f"incremental {_short(size)} into {_short(n)} db"
            self.scenario("incremental", label, n, size, inc, "jsonl", base_n=n)
            label = f"incremental {_short(size)} into empty db"
            self.scenario("incremental_empty", label, n, size, inc, "jsonl")
        if "feeds" in scenarios:
            self.feeds(n)
        for tool in _tools(args):
            base = self.bases.pop((tool, n), None)
            if base is not None and not args.keep:
                _remove_sqlite(base)


# -- reporting -------------------------------------------------------------------------------------


def _short(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return f"{n:,}"


def _find(results: list[Result], scenario: str, n: int, tool: str) -> Result | None:
    for result in results:
        if (result.scenario, result.n, result.tool) == (scenario, n, tool):
            return result
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _targets(results: list[Result], postgres: bool = False) -> list[dict[str, Any]]:
    """Issue 18's targets (with issue 3's records/s and RSS growth), checked against the figures
    measured in this run."""
    checks: list[dict[str, Any]] = []
    sizes = sorted({r.n for r in results if r.n != FIVE_M}) or sorted({r.n for r in results})
    n = LARGE if LARGE in sizes else sizes[-1] if sizes else LARGE
    at = f" (at N={_short(n)})" if n != LARGE else ""

    def check(name: str, value: float | None, limit: float, higher_is_better: bool = False) -> None:
        ok = None if value is None else value >= limit if higher_is_better else value <= limit
        checks.append({"target": name + at, "value": value, "limit": limit, "ok": ok})

    ours = _find(results, "jsonl", n, "capstone")
    for fmt in ("jsonl", "json", "csv"):
        mine, floor = _find(results, fmt, n, "capstone"), _find(results, fmt, n, "floor")
        if mine is None:
            continue
        if floor is not None:
            cpu = _ratio(mine.median_cpu, floor.median_cpu)
            check(
                f"{LABELS[fmt]}, capstone/floor seconds (by cpu s: {_fmt(cpu, '.2f')})",
                _ratio(mine.median, floor.median),
                0.75,
            )
        baseline = _find(results, fmt, n, "baseline")
        if baseline is not None:
            check(
                f"{LABELS[fmt]}, speed-up over the baseline capstone",
                _ratio(baseline.median, mine.median),
                1.5 if postgres else 2.0,
                higher_is_better=True,
            )
        check(f"{LABELS[fmt]}, peak RSS MB of the run's processes", mine.peak_mb, 250)
    if ours is not None:
        check("JSON Lines first load, records/s", ours.rate, 80_000, higher_is_better=True)
    folder = _find(results, "feed", n, "capstone")
    if folder is not None:
        check(
            "feed of gzip files, cores busy (cpu s / seconds)",
            _ratio(folder.median_cpu, folder.median),
            1.5,
            higher_is_better=True,
        )
    big, base = _find(results, "jsonl", FIVE_M, "capstone"), _find(results, "jsonl", n, "capstone")
    if big is not None and base is not None and n != FIVE_M:
        checks.append(
            {
                "target": f"JSON Lines peak RSS at 5M / at {_short(n)}",
                "value": _ratio(big.peak_mb, base.peak_mb),
                "limit": 1.2,
                "ok": None
                if big.peak_mb is None or base.peak_mb is None
                else big.peak_mb <= 1.2 * base.peak_mb,
            }
        )
    if ours is not None:
        check("JSON Lines first load, lineage bytes per record", ours.lineage_per_record, 70)
    into = _find(results, "incremental", n, "capstone")
    empty = _find(results, "incremental_empty", n, "capstone")
    if into is not None and empty is not None:
        check("incremental into full db / into empty db", _ratio(into.median, empty.median), 2.0)
    return checks


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _table(machine: dict[str, Any], results: list[Result], checks: list[dict[str, Any]]) -> str:
    lines = [
        f"capstone benchmark · {machine['cores']} cores ({machine['usable_cores']} usable) · "
        f"{machine['platform']} · Python {machine['python']} · SQLite {machine['sqlite']} · "
        f"pydantic {machine['pydantic']} · orjson {machine['orjson']}",
        f"capstone {machine['capstone']} from {machine['capstone_source']}"
        + (f" (git {machine['git_commit']}" if machine["git_commit"] else "")
        + (
            ", with uncommitted changes in capstone/"
            if machine["capstone_uncommitted_changes"]
            else ""
        )
        + (")" if machine["git_commit"] else "")
        + f" via {'capstone.run()' if machine['via'] == 'lib' else '`capstone run`'}"
        + f" · batch size {machine['batch_size']:,} · seed {machine['seed']}",
        (
            f"baseline: capstone from {machine['baseline_source']}\n"
            if machine.get("baseline_source")
            else ""
        )
        + f"capstone on {machine['capstone_backend']}, floor on SQLite"
        + (
            " (the ratio compares different databases)"
            if machine["capstone_backend"] != "sqlite"
            else ""
        )
        + f" · load average {machine['load_before']:.2f} at start, "
        + f"{machine.get('load_after', float('nan')):.2f} at end",
        "seconds = median of the repeats, load only; cpu s = its user+system CPU time (with the "
        "forked reader's: above seconds when both cores work); wall s = the whole process, "
        "startup included; speed-up = baseline seconds / capstone seconds; peak RSS = the run's "
        "process plus its reader",
        "",
    ]
    header = (
        "scenario",
        "N",
        "tool",
        "runs",
        "seconds",
        "cpu s",
        "wall s",
        "records/s",
        "cap/floor",
        "speed-up",
        "peak RSS MB",
        "lineage B/rec",
    )
    rows: list[tuple[str, ...]] = []
    for result in results:
        floor = _find(results, result.scenario, result.n, "floor")
        ratio = _ratio(result.median, floor.median if floor else None)
        baseline = _find(results, result.scenario, result.n, "baseline")
        speedup = _ratio(baseline.median if baseline else None, result.median)
        rows.append(
            (
                result.label,
                _short(result.records),
                result.tool,
                str(len(result.seconds)),
                _fmt(result.median, ".2f") if result.error is None else "FAILED",
                _fmt(result.median_cpu, ".2f"),
                _fmt(result.median_wall, ".2f"),
                # A rerun skipped by the manifest reads no record: records/s would mean nothing.
                _fmt(result.rate, ",.0f") if result.scenario != "feed_rerun" else "-",
                _fmt(ratio, ".2f") + "x" if result.tool == "capstone" and ratio else "",
                _fmt(speedup, ".2f") + "x" if result.tool == "capstone" and speedup else "",
                _fmt(result.peak_mb, ".0f"),
                _fmt(result.lineage_per_record, ".1f"),
            )
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    left = {0, 2}
    for row in [header, *rows]:
        cells = [
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    increments = sorted({r.n for r in results if r.scenario == "incremental"})
    if increments:
        lines.append("")
        for n in increments:
            parts = []
            for tool in [t for t in (*TOOLS, "baseline") if _find(results, "incremental", n, t)]:
                into = _find(results, "incremental", n, tool)
                empty = _find(results, "incremental_empty", n, tool)
                ratio = _ratio(into.median if into else None, empty.median if empty else None)
                wall = _ratio(
                    into.median_wall if into else None, empty.median_wall if empty else None
                )
                parts.append(f"{tool} {_fmt(ratio, '.2f')}x (by wall s {_fmt(wall, '.2f')}x)")
            lines.append(
                f"incremental into the {_short(n)} db / into an empty db: " + ", ".join(parts)
            )
    feeds = sorted({r.n for r in results if r.scenario == "feed"})
    if feeds:
        lines.append("")
    for n in feeds:
        plain, folder = (
            _find(results, "feed_plain", n, "capstone"),
            _find(results, "feed", n, "capstone"),
        )
        rerun = _find(results, "feed_rerun", n, "capstone")
        rates = _ratio(folder.rate if folder else None, plain.rate if plain else None)
        cpu = _ratio(plain.median_cpu if plain else None, folder.median_cpu if folder else None)
        skipped = (rerun.counts or {}).get("files_skipped") if rerun else None
        lines.append(
            f"feed of {_short(n)} (issue 15): {FEED_FILES} gzip files / one plain file, records/s "
            f"{_fmt(rates, '.2f')}x (by cpu s {_fmt(cpu, '.2f')}x); the folder again: "
            f"{_fmt(rerun.median if rerun else None, '.2f')} s, {_fmt(skipped, 'd')} of "
            f"{FEED_FILES} files skipped by the manifest"
        )
    if checks:
        lines += ["", "targets (issue 18; records/s and RSS at 5M: issue 3):"]
        for item in checks:
            mark = {True: "PASS", False: "FAIL", None: "n/a "}[item["ok"]]
            value = item["value"]
            shown = "-" if value is None else f"{value:,.0f}" if value >= 1000 else f"{value:.2f}"
            lines.append(f"  {mark}  {item['target']}: {shown} (limit {item['limit']:,})")
    failures = [r for r in results if r.error]
    if failures:
        lines += ["", "failed measurements:"]
        lines += [f"  N={_short(r.n)} {r.label} · {r.tool}: {r.error}" for r in failures]
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------------


def _render(path: Path) -> str:
    document = orjson.loads(path.read_bytes())
    names = {f.name for f in fields(Result)}
    results = [
        Result(**{key: value for key, value in item.items() if key in names})
        for item in document["results"]
    ]
    return _table(document["machine"], results, document["targets"])


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.render:
        sys.stdout.write(_render(args.render) + "\n")
        return 0
    if args.db_url and not args.db_url.startswith(("postgresql://", "postgres://")):
        _parser().error("--db-url must be a postgresql:// URL (SQLite is the default)")
    if args.repeat < 1 or (args.repeat_large is not None and args.repeat_large < 1):
        _parser().error("--repeat and --repeat-large must be at least 1")
    plan = [(n, args.scenarios) for n in sorted(set(args.sizes))]
    if args.with_5m and FIVE_M not in args.sizes:
        plan.append((FIVE_M, ["jsonl"]))
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / f"work-{os.getpid()}"
    work.mkdir()
    bench = Bench(args, work)
    try:
        machine = _machine(args, work)
        _log(
            f"{machine['cores']} cores · Python {machine['python']} · SQLite {machine['sqlite']} · "
            f"capstone from {machine['capstone_source']} on {machine['capstone_backend']}"
        )
        for n, scenarios in plan:
            bench.run(n, scenarios)
    except BenchError as error:
        _log(f"error: {error}")
        return 1
    except KeyboardInterrupt:
        _log("interrupted; scratch databases removed")
        return 130
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    machine["load_after"] = os.getloadavg()[0]
    if max(machine["load_before"], machine["load_after"]) > 0.5 * (machine["usable_cores"] or 1):
        _log(
            "other processes were busy during the run (see the load average); "
            "wall times are inflated, compare cpu s"
        )
    checks = _targets(bench.results, postgres=args.db_url is not None)
    if args.json:
        document = {
            "machine": machine,
            "results": [result.as_dict() for result in bench.results],
            "targets": checks,
        }
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(_table(machine, bench.results, checks) + "\n")
    return 1 if any(result.error for result in bench.results) else 0


if __name__ == "__main__":
    sys.exit(main())
