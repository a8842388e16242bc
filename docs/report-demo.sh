#!/usr/bin/env bash
# Builds the database behind docs/report.png: eight deliveries of the built-in `events` pipeline
# (rejects, stale and late records, a file sent twice), a broken file whose run fails, and the
# `orders` pipeline of capstone.toml. Usage: docs/report-demo.sh FOLDER (then open FOLDER/report.html).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:?give a folder to build the demo in}"
mkdir -p "$out"
cd "$out"
capstone="${CAPSTONE:-$root/.venv/bin/capstone}"
python="${PYTHON:-$root/.venv/bin/python}"
rm -f demo.db report.html

"$python" - <<'PY'
import json, random
random.seed(17)
bad = [{"key": "", "name": "x", "value": 1, "ts": "2025-02-01T00:00:00"},
       {"key": "k", "name": "x", "value": "n/a", "ts": "2025-02-01T00:00:00"},
       {"key": "k", "name": "x", "value": 1}]
for day in range(1, 8):
    rows = []
    for i in range(random.randint(150, 400)):
        rows.append({"key": f"evt-{day}-{i}", "name": random.choice(["view", "click", "signup"]),
                     "value": round(random.random() * 10, 2),
                     "ts": f"2025-02-{day:02d}T{random.randint(0, 23):02d}:{random.randint(0, 59):02d}:00"})
    # an older update of a key already in the file: stale
    rows += [dict(r, ts=f"2025-02-{day:02d}T00:00:00") for r in rows[: random.randint(5, 30)] if r["ts"][11:] > "00:00:00"]
    if day > 2:  # yesterday's stragglers, new keys behind the watermark: late
        rows += [{"key": f"late-{day}-{i}", "name": "view", "value": 1.0,
                  "ts": f"2025-02-{day - 1:02d}T{i % 24:02d}:30:00"} for i in range(random.randint(10, 60))]
    rows += [random.choice(bad) for _ in range(random.randint(0, 25))]
    with open(f"events-2025-02-{day:02d}.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
PY

cp "$root/data/sample_input.txt" "$root/data/orders.jsonl" .
"$capstone" run -q --db demo.db -i sample_input.txt
for day in 1 2 3 4; do "$capstone" run -q --db demo.db -i "events-2025-02-0$day.jsonl"; done
# A file name is user data: this one is <script>alert(1)</script>.json, in a folder named '<script>alert(1)<'.
mkdir -p '<script>alert(1)<'
printf '[{"key": "a"}] {"key": "b"}' > '<script>alert(1)</script>.json'
"$capstone" run -q --db demo.db -i '<script>alert(1)</script>.json' || true
for day in 5 6 7; do "$capstone" run -q --db demo.db -i "events-2025-02-0$day.jsonl"; done
cp events-2025-02-07.jsonl resent.jsonl
"$capstone" run -q --db demo.db -i resent.jsonl
"$capstone" run -q --db demo.db --config "$root/capstone.toml" --pipeline orders -i orders.jsonl
"$capstone" report --db demo.db --html report.html
