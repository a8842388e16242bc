"""One measurement in a fresh process: load a file with capstone or the floor, report it as JSON.

`seconds` times the load alone (from the call of `capstone.run` or the floor's `load` to its return;
with `--via cli`, the whole `capstone run` process); `cpu` is the user+system CPU time of the same
span, which other processes on the machine disturb far less than wall time. The benchmark starts this module once per
measurement, so the peak RSS it reports belongs to that load alone: VmHWM of this process plus
the peak of the reader a run forks (`capstone.readahead`), or `RUSAGE_CHILDREN` of the one CLI
process it starts with `--via cli`. CPU seconds include the reader's. It prints exactly one JSON object on stdout:

    {"ok": true, "seconds": ..., "cpu": ..., "maxrss_kb": ..., "counts": {...}, "pid": ...}
    {"ok": false, "error": "...", "detail": "...traceback tail..."}
"""

import argparse
import os
import resource
import subprocess
import sys
import time
import traceback
from typing import Any

import orjson

__all__ = ["COUNTS", "main"]

COUNTS = (
    "input_records",
    "staged",
    "loaded",
    "stale",
    "rejected",
    "skipped",
    "dead_letters",
    "lineage_entries",
    "watermark_before",
    "watermark",
)
"""The run figures both tools report; the benchmark checks they agree."""


def _capstone_lib(args: argparse.Namespace) -> dict[str, Any]:
    from capstone import RunOptions, run

    options = RunOptions(batch_size=args.batch_size, format=args.format)
    clock, cpu = time.perf_counter(), _cpu_all()
    summary = run(args.input, args.db, options)
    seconds, cpu = time.perf_counter() - clock, _cpu_all() - cpu
    if summary.status != "success":
        raise RuntimeError(f"capstone run ended with status {summary.status}: {summary.error}")
    counts = summary.model_dump(include=set(COUNTS))
    return {"seconds": seconds, "cpu": cpu, "counts": counts} | _memory()


def _capstone_cli(args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, "-m", "capstone", "run", "--input", args.input, "--db", args.db]
    command += ["--json", "--batch-size", str(args.batch_size)]
    if args.format:
        command += ["--format", args.format]
    clock = time.perf_counter()
    done = subprocess.run(command, capture_output=True, check=False)
    seconds = time.perf_counter() - clock
    if done.returncode != 0:
        raise RuntimeError(
            f"`capstone run` exited with {done.returncode}: "
            f"{done.stderr.decode(errors='replace').strip()[-2000:]}"
        )
    summary = orjson.loads(done.stdout)
    counts = {key: summary.get(key) for key in COUNTS}
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the one child: this run
    cpu = _cpu(resource.RUSAGE_CHILDREN)
    return {"seconds": seconds, "cpu": cpu, "counts": counts, "maxrss_kb": rss}


def _capstone_feed(args: argparse.Namespace) -> dict[str, Any]:
    """A folder (or glob) through `run_many`, one run per file; counts summed over the runs."""
    from capstone.pipeline import RunOptions, run_many

    options = RunOptions(batch_size=args.batch_size, format=args.format)
    clock, cpu = time.perf_counter(), _cpu_all()
    feed = run_many([args.input], args.db, options)
    seconds, cpu = time.perf_counter() - clock, _cpu_all() - cpu
    if feed.failed:
        raise RuntimeError(
            f"capstone run_many: {len(feed.failed)} file(s) failed: {feed.failed[0].error}"
        )
    counts: dict[str, Any] = {
        key: sum(getattr(r, key) for r in feed.runs)
        for key in COUNTS
        if key not in ("watermark_before", "watermark")
    }
    counts |= {
        "watermark_before": feed.runs[0].watermark_before,
        "watermark": feed.runs[-1].watermark,
    }
    counts |= {
        "files": len(feed.runs),
        "files_skipped": sum(r.same_content_as is not None for r in feed.runs),
    }
    return {"seconds": seconds, "cpu": cpu, "counts": counts} | _memory()


def _floor(args: argparse.Namespace) -> dict[str, Any]:
    from bench.floor import load

    clock, cpu = time.perf_counter(), _cpu(resource.RUSAGE_SELF)
    counts = load(args.input, args.db, fmt=args.format, batch_size=args.batch_size)
    seconds, cpu = time.perf_counter() - clock, _cpu(resource.RUSAGE_SELF) - cpu
    return {"seconds": seconds, "cpu": cpu, "counts": counts, "maxrss_kb": _self_rss()}


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _cpu_all() -> float:
    """CPU seconds of this process and of its ended children: a run's forked reader (reaped by
    the run) counts with the run."""
    return _cpu(resource.RUSAGE_SELF) + _cpu(resource.RUSAGE_CHILDREN)


def _memory() -> dict[str, int]:
    """Peak memory of the load's processes together: this one's peak plus the largest peak of
    its forked readers (pages they share with this process are counted twice, so the sum is an
    upper bound)."""
    own, readers = _self_rss(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"maxrss_kb": own + readers, "writer_rss_kb": own, "reader_rss_kb": readers}


def _self_rss() -> int:
    """This process's peak resident memory in KiB: VmHWM where Linux has it, since ru_maxrss is
    kept across execve (a child of a large process would report its parent's peak)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def main(argv: list[str] | None = None) -> int:
    """`python -m bench._child {capstone,floor} INPUT DB [--format F] [--batch-size N] [--via V]
    [--feed]`."""
    parser = argparse.ArgumentParser(prog="python -m bench._child", description=main.__doc__)
    parser.add_argument("tool", choices=("capstone", "floor"))
    parser.add_argument("input")
    parser.add_argument("db")
    parser.add_argument("--format", choices=("json", "jsonl", "csv"))
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--via", choices=("lib", "cli"), default="lib")
    parser.add_argument("--feed", action="store_true", help="INPUT is a folder: run_many")
    args = parser.parse_args(argv)
    try:
        if args.tool == "floor":
            result = _floor(args)
        elif args.feed:
            result = _capstone_feed(args)
        elif args.via == "cli":
            result = _capstone_cli(args)
        else:
            result = _capstone_lib(args)
    except BaseException as error:  # report anything, even KeyboardInterrupt, as one JSON line
        detail = "".join(traceback.format_exception(error)[-6:])
        message = f"{type(error).__name__}: {error}"
        sys.stdout.write(orjson.dumps({"ok": False, "error": message, "detail": detail}).decode())
        sys.stdout.write("\n")
        return 1
    result |= {"ok": True, "pid": os.getpid()}
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
