#!/usr/bin/env python3
"""A second retrieval domain for checking tuning on data it was not designed on.

Builds a BEIR-format dataset (corpus.jsonl, queries.jsonl, qrels/train.tsv, qrels/test.tsv)
from the package descriptions of the machine's dpkg database: each installed package with a
long description of at least 15 words is a document (the long description); each package whose
one-line summary is unique is a query (the summary) whose one relevant document is its own
long description. Queries are split 60/40 into train and test with a fixed seed.

The set depends on which packages are installed (657 documents, 382 training and 254 test
queries on the development machine of 2026-12-06), so figures from another machine differ.

usage: scripts/debian_descriptions_beir.py OUT_DIR [--status /var/lib/dpkg/status]
then, with a release build:
  latentdb --data DB collection create deb --model default
  latentdb --data DB eval deb --beir OUT_DIR --split test        # loads the corpus
  latentdb --data DB tune deb --beir OUT_DIR --split train --eval-split test --force --json
"""

import argparse
import collections
import json
import os
import random
import sys


def packages(status_path):
    """(name, summary, long description) of every package with a long description."""
    with open(status_path, encoding="utf-8", errors="replace") as f:
        blocks = f.read().split("\n\n")
    out = []
    for block in blocks:
        name, summary, long_lines = None, None, []
        lines = block.split("\n")
        for i, line in enumerate(lines):
            if line.startswith("Package:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("Description:"):
                summary = line.split(":", 1)[1].strip()
                for cont in lines[i + 1 :]:
                    if not cont.startswith(" "):
                        break
                    text = cont[1:]
                    long_lines.append("" if text.strip() == "." else text)
        long_text = "\n".join(long_lines).strip()
        if name and summary and len(long_text.split()) >= 15:
            out.append((name, summary, long_text))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--status", default="/var/lib/dpkg/status")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    pkgs = packages(args.status)
    by_summary = collections.Counter(s for _, s, _ in pkgs)
    queries = [p for p in pkgs if by_summary[p[1]] == 1]
    random.Random(args.seed).shuffle(queries)
    n_test = int(len(queries) * 0.4)
    splits = {"test": queries[:n_test], "train": queries[n_test:]}

    os.makedirs(os.path.join(args.out_dir, "qrels"), exist_ok=True)
    doc_id = {}
    with open(os.path.join(args.out_dir, "corpus.jsonl"), "w") as f:
        for i, (name, _, long_text) in enumerate(pkgs):
            doc_id[name] = f"p{i:04d}"
            f.write(json.dumps({"_id": doc_id[name], "title": "", "text": long_text}) + "\n")
    with open(os.path.join(args.out_dir, "queries.jsonl"), "w") as fq:
        qi = 0
        for split, rows in splits.items():
            with open(os.path.join(args.out_dir, "qrels", f"{split}.tsv"), "w") as f:
                f.write("query-id\tcorpus-id\tscore\n")
                for name, summary, _ in rows:
                    qid = f"q{qi:04d}"
                    qi += 1
                    fq.write(json.dumps({"_id": qid, "text": summary}) + "\n")
                    f.write(f"{qid}\t{doc_id[name]}\t1\n")
    print(
        f"{len(pkgs)} documents, {len(splits['train'])} training and "
        f"{len(splits['test'])} test queries in {args.out_dir}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
