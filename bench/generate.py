"""Seeded synthetic event files for the benchmark: JSON Lines, a JSON array or CSV.

The same (n, seed, kind) always gives the same records, byte for byte, in every format. Records are
written one at a time, so memory stays flat however many are asked for.

What a file holds, by design:

- about 30% of records repeat a key seen earlier (half of them one of the last 500 new keys, half any
  earlier key), so the merge's newest-wins guard matters;
- about 10% carry a timestamp up to an hour older than their neighbours (out of order); those that
  repeat a recent key often lose to a newer record of it and go stale (about 1% of all records);
- about 2% are invalid, rotating through: blank key, non-numeric value, bad ts, malformed record
  (a truncated line in JSON Lines, a non-object element in a JSON array, a short row in CSV);
- every timestamp lies in 2024, long before now, one second apart on average.

An *incremental* file (`incremental_spec`) holds new records whose timestamps are all newer than the
newest of a base file's, about 30% of them updating keys the base file already wrote.
"""

import argparse
import csv
import io
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Literal

import orjson

__all__ = [
    "FORMATS",
    "Spec",
    "Summary",
    "base_spec",
    "incremental_spec",
    "records",
    "write",
]

GenFormat = Literal["jsonl", "json", "csv"]
FORMATS: tuple[GenFormat, ...] = ("jsonl", "json", "csv")
BASE_TIME = datetime(2024, 1, 1)
"""Every generated timestamp is at or after this and (for up to ~100M records) before 2028."""
NAMES = ("page_view", "click", "purchase", "signup", "api_call", "logout", "search", "refund")
INVALID_KINDS = ("blank_key", "bad_value", "bad_ts", "malformed")
RECENT_KEYS = 500
VERSION = 2
"""Bumped whenever the records a spec yields change, so cached files are regenerated."""


@dataclass(frozen=True)
class Spec:
    """What to generate. `first_key` and `start_second` place an incremental file after a base one."""

    n: int
    seed: int = 42
    repeat_share: float = 0.30
    out_of_order_share: float = 0.10
    invalid_share: float = 0.02
    first_key: int = 0
    """Id of the first new key; repeats pick any id below the next new one (base keys included)."""
    start_second: int = 0
    """Seconds after BASE_TIME of the first record."""

    @property
    def tag(self) -> str:
        """A file-name-safe identity of the records this spec yields."""
        return f"v{VERSION}-n{self.n}-s{self.seed}-k{self.first_key}-t{self.start_second}"


def base_spec(n: int, seed: int = 42) -> Spec:
    """A first-load file of n records."""
    return Spec(n=n, seed=seed)


def incremental_spec(base: Spec, n: int = 10_000) -> Spec:
    """n new records, all newer than every record of `base`, some updating `base`'s keys."""
    return replace(
        base,
        n=n,
        seed=base.seed * 1_000_003 + 1,
        first_key=base.first_key + base.n,
        start_second=base.start_second + base.n + 2 * 3600,
    )


# A record is a tuple: (kind, key, name, value, ts) where kind is "ok" or one of INVALID_KINDS.
Record = tuple[str, str, str, float | str, str]


def _key(key_id: int) -> str:
    # A bijection of [0, 2**32): keys are unique per id but arrive in no particular order, like the
    # ids of real events, so the target's primary-key index is not filled in append order.
    return f"evt-{(key_id * 2654435761) & 0xFFFFFFFF:08x}"


def records(spec: Spec) -> Iterator[Record]:
    """Yield the spec's records in file order."""
    rng = random.Random(spec.seed)
    rand, randrange = rng.random, rng.randrange
    next_key = spec.first_key
    base = BASE_TIME + timedelta(seconds=spec.start_second)
    invalid_every = round(1 / spec.invalid_share) if spec.invalid_share > 0 else 0
    invalid_count = 0
    for i in range(spec.n):
        if next_key > 0 and rand() < spec.repeat_share:
            # Half the repeats hit a recent key (updates in quick succession), half any earlier one.
            low = max(0, next_key - RECENT_KEYS) if rand() < 0.5 else 0
            key = _key(randrange(low, next_key))
        else:
            key = _key(next_key)
            next_key += 1
        second = i
        if rand() < spec.out_of_order_share:
            second -= randrange(1, 3600)
        ts = (base + timedelta(seconds=second)).isoformat()
        name = NAMES[randrange(len(NAMES))]
        value = round(rand() * 1000, 2)
        # Spread the invalid records evenly but not on a fixed stride (a stride can alias with a
        # batch size and hide per-batch costs).
        if invalid_every and randrange(invalid_every) == 0:
            kind = INVALID_KINDS[invalid_count % len(INVALID_KINDS)]
            invalid_count += 1
            # Each invalid record names its position, so no two have the same raw text and every one
            # becomes its own dead letter.
            if kind == "blank_key":
                yield kind, "", f"bad-{i}", value, ts
            elif kind == "bad_value":
                yield kind, key, f"bad-{i}", "n/a", ts
            elif kind == "bad_ts":
                yield kind, key, f"bad-{i}", value, f"2024-02-30T{i % 24:02d}:00:00"
            else:
                yield kind, key, f"bad-{i}", value, ts
            continue
        yield "ok", key, name, value, ts


@dataclass
class Summary:
    """What a generated file holds."""

    path: str
    format: str
    records: int
    invalid: int
    bytes: int


def _jsonl(spec: Spec, out: IO[bytes]) -> int:
    dumps, invalid = orjson.dumps, 0
    for kind, key, name, value, ts in records(spec):
        if kind == "malformed":
            invalid += 1
            out.write(f'{{"key": "{key}", "name": "{name}", "value": {value}, "ts": \n'.encode())
            continue
        invalid += kind != "ok"
        out.write(dumps({"key": key, "name": name, "value": value, "ts": ts}) + b"\n")
    return invalid


def _json_array(spec: Spec, out: IO[bytes]) -> int:
    dumps, invalid, sep = orjson.dumps, 0, b"[\n"
    for kind, key, name, value, ts in records(spec):
        out.write(sep)
        sep = b",\n"
        if kind == "malformed":
            invalid += 1
            out.write(dumps(f"{key} {name} {value} {ts}"))  # an element that is not an object
            continue
        invalid += kind != "ok"
        out.write(dumps({"key": key, "name": name, "value": value, "ts": ts}))
    out.write(b"[]\n" if sep == b"[\n" else b"\n]\n")
    return invalid


def _csv(spec: Spec, out: IO[bytes]) -> int:
    text = io.TextIOWrapper(out, encoding="utf-8", newline="")
    writer, invalid = csv.writer(text, lineterminator="\n"), 0
    writer.writerow(("key", "name", "value", "ts"))
    for kind, key, name, value, ts in records(spec):
        if kind == "malformed":
            invalid += 1
            writer.writerow((key, name, value))  # one column short
            continue
        invalid += kind != "ok"
        writer.writerow((key, name, value, ts))
    text.flush()
    text.detach()
    return invalid


def write(spec: Spec, path: str | Path, fmt: GenFormat) -> Summary:
    """Write the spec's records to `path` in `fmt` (atomically: a partial file never stays)."""
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    writer = {"jsonl": _jsonl, "json": _json_array, "csv": _csv}[fmt]
    with open(partial, "wb", buffering=1 << 20) as out:
        invalid = writer(spec, out)
    partial.replace(target)
    return Summary(str(target), fmt, spec.n, invalid, target.stat().st_size)


def main(argv: list[str] | None = None) -> None:
    """`python -m bench.generate N PATH [--format F] [--seed S] [--incremental]`."""
    parser = argparse.ArgumentParser(prog="python -m bench.generate", description=main.__doc__)
    parser.add_argument("n", type=int, help="records to write (for --incremental: the base's n)")
    parser.add_argument("path")
    parser.add_argument(
        "--format", choices=FORMATS, help="default: from the file's extension, else jsonl"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--incremental",
        type=int,
        metavar="M",
        help="write M new records newer than the base file of n records instead",
    )
    args = parser.parse_args(argv)
    spec = base_spec(args.n, args.seed)
    if args.incremental is not None:
        spec = incremental_spec(spec, args.incremental)
    suffix = os.path.splitext(args.path)[1].lower().lstrip(".")
    by_suffix: GenFormat = next((f for f in FORMATS if f == suffix), "jsonl")
    fmt: GenFormat = args.format or by_suffix
    summary = write(spec, args.path, fmt)
    print(
        f"{summary.path}: {summary.records:,} records ({summary.invalid:,} invalid), "
        f"{summary.bytes / 1e6:,.1f} MB of {summary.format}"
    )


if __name__ == "__main__":
    main()
