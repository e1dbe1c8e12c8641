#!/usr/bin/env bash
# The LoRA training step's speed, two latentdb builds in one run: each tunes the same
# collection with the same flags (`--train head+lora`, stage 1 only, fixed steps), the builds
# alternating round by round so that a change in machine load hits both. Prints one JSON
# object per run, then one summary per token length with the median stage-1 seconds of each
# build and their ratio (the speed-up of NEW over OLD).
#
# The job: a slice of tests/fixtures/datasets/spamassassin-subjects (the positives of the
# first 400 training queries and of every test query: 971 e-mails), as the tuning test uses,
# loaded once with NEW's default model. Run it on a quiet machine (nothing else building).
#
# usage: scripts/tune_step_ab.sh OLD_BINARY NEW_BINARY
#   env ROUNDS (default 2), TOKENS (default "64 256"), STEPS (default 10),
#   WORK (default a new temporary directory; removed at the end unless KEEP=1).
# Example (the build before issue 17 against this one):
#   git worktree add /tmp/old b4eaafb && (cd /tmp/old && cargo build --release -p latentdb-cli)
#   cargo build --release -p latentdb-cli
#   scripts/tune_step_ab.sh /tmp/old/target/release/latentdb target/release/latentdb
set -euo pipefail
if [ $# -ne 2 ]; then
  sed -n 2,18p "$0" >&2
  exit 2
fi
old=$(realpath "$1")
new=$(realpath "$2")
root=$(cd "$(dirname "$0")/.." && pwd)
data="$root/tests/fixtures/datasets/spamassassin-subjects"
rounds=${ROUNDS:-2}
tokens=${TOKENS:-64 256}
steps=${STEPS:-10}
work=${WORK:-$(mktemp -d)}
mkdir -p "$work"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT

# The slice as a BEIR dataset of its own.
python3 - "$data" "$work/beir" <<'PY'
import json, os, sys
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(f"{dst}/qrels", exist_ok=True)
def qrels(split):
    rows = [l.rstrip("\n").split("\t") for l in open(f"{src}/qrels/{split}.tsv")][1:]
    return sorted((q, d, s) for q, d, s in rows)
train = qrels("train")
first = sorted({q for q, _, _ in train})[:400]
train = [r for r in train if r[0] in set(first)]
test = qrels("test")
keep_docs = {d for _, d, _ in train + test}
keep_queries = {q for q, _, _ in train + test}
for split, rows in (("train", train), ("test", test)):
    with open(f"{dst}/qrels/{split}.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        f.writelines("\t".join(r) + "\n" for r in rows)
with open(f"{dst}/corpus.jsonl", "w") as f:
    for line in open(f"{src}/corpus.jsonl"):
        if json.loads(line)["_id"] in keep_docs:
            f.write(line)
with open(f"{dst}/queries.jsonl", "w") as f:
    for line in open(f"{src}/queries.jsonl"):
        if json.loads(line)["_id"] in keep_queries:
            f.write(line)
print(f"slice: {len(keep_docs)} documents, {len(first)} training queries, "
      f"{len({q for q, _, _ in test})} test queries", file=sys.stderr)
PY

# Load it once (`eval` loads an empty collection's corpus).
"$new" --data "$work/db" collection create slice --model default >/dev/null
"$new" --data "$work/db" eval slice --beir "$work/beir" --split test --json >/dev/null

for t in $tokens; do
  for r in $(seq "$rounds"); do
    for which in old new; do
      bin=$old; [ "$which" = new ] && bin=$new
      rm -rf "$work/run" && cp -r "$work/db" "$work/run"
      "$bin" --data "$work/run" tune slice --beir "$work/beir" --split train --eval-split test \
        --train head+lora --batch-size 8 --hard-negatives 3 --lr 5e-4 \
        --stage1-steps "$steps" --stage2-steps 0 --train-tokens "$t" --force --json \
        >"$work/$which-$t-$r.json" 2>"$work/$which-$t-$r.err"
      python3 - "$work/$which-$t-$r.json" "$which" "$t" "$r" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import json, sys
path, which, tokens, rnd, load = sys.argv[1:]
r = json.load(open(path))
s1 = r["stage1"]
print(json.dumps({"build": which, "train_tokens": int(tokens), "round": int(rnd),
                  "stage1_seconds": round(s1["seconds"], 2),
                  "pairs_per_second": round(s1["pairs_per_second"], 2),
                  "ndcg@10_after": round(r["after"]["ndcg@10"], 4), "load": load}))
PY
    done
  done
  python3 - "$work" "$t" "$rounds" <<'PY'
import json, statistics, sys
work, tokens, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
secs = {w: [json.load(open(f"{work}/{w}-{tokens}-{r}.json"))["stage1"]["seconds"]
            for r in range(1, rounds + 1)] for w in ("old", "new")}
old, new = statistics.median(secs["old"]), statistics.median(secs["new"])
print(json.dumps({"train_tokens": int(tokens), "old_seconds": secs["old"],
                  "new_seconds": secs["new"], "speedup": round(old / new, 2)}))
PY
done
