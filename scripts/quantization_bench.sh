#!/usr/bin/env bash
# int8 quantization against f32 through the whole database, in one run on the same data:
# `latentdb bench ann` alternately with `--quantization none` and `--quantization int8`
# (ROUNDS rounds, so that a drifting machine hits both alike), then a table of the medians:
# build rate, recall@10 and one-thread QPS at each ef, and the memory the index holds for
# vectors. Prints one JSON object per run on the way (saved under DIR/runs/).
#
#   scripts/quantization_bench.sh [DIR]      (default DIR: /tmp/latentdb-quantization)
#
# Environment: LATENTDB (the binary; default target/release/latentdb, built if missing),
# N (100000), DIM (384), EF (32,64), ROUNDS (3), OVERSAMPLING (the collection default: 3).
# The data is `latentdb bench gen-data` (clustered, power-law spectrum, cosine; 1,000 queries
# with their exact top 10), written to DIR once and reused.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${1:-/tmp/latentdb-quantization}"
bin="${LATENTDB:-$root/target/release/latentdb}"
n="${N:-100000}"
dim="${DIM:-384}"
ef="${EF:-32,64}"
rounds="${ROUNDS:-3}"

if [[ ! -x "$bin" ]]; then
    (cd "$root" && cargo build --release -p latentdb-cli)
fi
mkdir -p "$dir/runs"
if [[ ! -f "$dir/gt.npy" ]]; then
    "$bin" bench gen-data --n "$n" --dim "$dim" --queries 1000 --gt-k 10 --out "$dir" >&2
fi
extra=()
if [[ -n "${OVERSAMPLING:-}" ]]; then
    extra=(--oversampling "$OVERSAMPLING")
fi

for round in $(seq 1 "$rounds"); do
    for q in none int8; do
        out="$dir/runs/$q-$round.json"
        "$bin" --json bench ann --base "$dir/base.npy" --queries "$dir/queries.npy" \
            --gt "$dir/gt.npy" --ef "$ef" --quantization "$q" "${extra[@]}" >"$out"
        cat "$out"
    done
done

python3 - "$dir/runs" <<'EOF'
import json, pathlib, statistics, sys

rows = {}
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    for line in f.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            rows.setdefault((r["quantization"], r["phase"], r.get("ef")), []).append(r)

def med(key, field):
    return statistics.median(r[field] for r in rows[key])

b32, b8 = ("none", "build", None), ("int8", "build", None)
print()
print(f"| | f32 | int8 | int8 / f32 |")
print(f"|---|---|---|---|")
v32, v8 = med(b32, "vectors_per_s"), med(b8, "vectors_per_s")
print(f"| build, vectors/s (storage included) | {v32:,.0f} | {v8:,.0f} | {v8 / v32:.2f} |")
m32, m8 = med(b32, "vector_bytes"), med(b8, "vector_bytes")
print(f"| index memory for vectors, MiB | {m32 / 2**20:.1f} | {m8 / 2**20:.1f} | {m8 / m32:.3f} |")
efs = sorted({k[2] for k in rows if k[1] == "search"})
for e in efs:
    a, b = ("none", "search", e), ("int8", "search", e)
    ra, rb = med(a, "recall"), med(b, "recall")
    qa, qb = med(a, "qps"), med(b, "qps")
    print(f"| ef {e}: recall@10 | {ra:.4f} | {rb:.4f} | {rb - ra:+.4f} |")
    print(f"| ef {e}: QPS, 1 thread | {qa:,.0f} | {qb:,.0f} | {qb / qa:.2f} |")
n = len(rows[b32])
print(f"\nmedians of {n} alternating rounds")
EOF
