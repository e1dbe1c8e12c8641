#!/usr/bin/env python3
"""`latentdb bench embed` against onnxruntime on the same texts, the same model, the same batch
size and thread count, in one run, with the ratios.

The model: all-MiniLM-L6-v2 from latentdb's model cache (`latentdb model fetch`). onnxruntime
runs the ONNX graph that `scripts/ingest_chromadb.py` writes from the same `model.safetensors`
(embeddings, 6 encoder layers with exact erf GELU, masked mean pooling, L2 normalisation); the
graph's vectors are checked against `latentdb embed` before anything is measured.

Two text sets, both from the repository's spamassassin-subjects fixture:
- `short`: the first 512 queries (email subject lines, about 13 tokens each);
- `long`: corpus texts cut to at most 240 tokens at a word boundary, kept when they have
  100 to 250 tokens (the first 512 such).

onnxruntime is measured two ways, both with its default graph optimisations,
intra_op_num_threads = --threads and inter_op_num_threads = 1:
- `padded`: batches in file order, each padded to its longest text (what chromadb's
  embedding function and most callers do);
- `sorted`: the texts sorted by token count first, so each batch has almost no padding
  (latentdb's own batching does this, and packs inputs without any padding).
Both include tokenisation, as `bench embed` does. Each round runs the three in a rotating
order, after one warm-up pass each; the report gives every round and the medians.

    python3 -m venv /tmp/chromavenv
    /tmp/chromavenv/bin/pip install onnxruntime tokenizers numpy onnx safetensors
    cargo build --release -p latentdb-cli
    /tmp/chromavenv/bin/python scripts/embed_onnxruntime.py --latentdb target/release/latentdb

Prints one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_chromadb import (  # noqa: E402
    MAX_LEN, add_common_args, check_against_latentdb, export_onnx, parse_common_args)

REPO = Path(__file__).resolve().parent.parent
DATASET = REPO / "tests" / "fixtures" / "datasets" / "spamassassin-subjects"


def make_sets(tok, count: int) -> dict[str, list[str]]:
    """The short and the long text sets (see the module docstring)."""
    with open(DATASET / "queries.jsonl", encoding="utf-8") as f:
        short = [json.loads(line)["text"] for line in f if line.strip()][:count]
    longs: list[str] = []
    with open(DATASET / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            if len(longs) >= count:
                break
            words = json.loads(line)["text"].split()
            lo, hi = 0, len(words)
            while lo < hi:  # the longest prefix of whole words within 240 tokens
                mid = (lo + hi + 1) // 2
                if len(tok.encode(" ".join(words[:mid])).ids) <= 240:
                    lo = mid
                else:
                    hi = mid - 1
            text = " ".join(words[:lo])
            if 100 <= len(tok.encode(text).ids) <= 250:
                longs.append(text)
    return {"short": short, "long": longs}


class Ort:
    """onnxruntime on the exported graph, with the model's tokenizer."""

    def __init__(self, onnx_path: Path, model_dir: Path, threads: int) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(onnx_path), opts,
                                            providers=["CPUExecutionProvider"])
        self.version = ort.__version__
        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tok.enable_truncation(max_length=MAX_LEN)
        self.tok.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest of the batch

    def embed(self, texts: list[str]) -> np.ndarray:
        enc = self.tok.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        (out,) = self.session.run(None, {"input_ids": ids, "attention_mask": mask})
        return out

    def texts_per_s(self, texts: list[str], batch: int, sort: bool) -> float:
        start = time.perf_counter()
        if sort:  # the sort is part of the measured work, as latentdb's is
            lengths = [sum(e.attention_mask) for e in self.tok.encode_batch(texts)]
            texts = [t for _, t in sorted(zip(lengths, texts), key=lambda p: p[0])]
        for i in range(0, len(texts), batch):
            self.embed(texts[i:i + batch])
        return len(texts) / (time.perf_counter() - start)


def latentdb_texts_per_s(latentdb: str, path: Path, batch: int, threads: int,
                         env: dict) -> dict:
    cmd = [latentdb, "--json", "bench", "embed", "--input", str(path), "--model", "default",
           "--batch-size", str(batch), "--threads", str(threads)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap)
    ap.add_argument("--texts", type=int, default=512, help="texts per set")
    ap.add_argument("--rounds", type=int, default=3)
    args = parse_common_args(ap)
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory(prefix="embed-ort-") as tmp_name:
        tmp = Path(tmp_name)
        onnx_path = args.onnx or tmp / "all-MiniLM-L6-v2.onnx"
        if not onnx_path.is_file():
            export_onnx(args.model_dir, onnx_path)
        ort = Ort(onnx_path, args.model_dir, args.threads)
        sets = make_sets(ort.tok, args.texts)
        files = {}
        for name, texts in sets.items():
            files[name] = tmp / f"{name}.jsonl"
            files[name].write_text("".join(json.dumps(t) + "\n" for t in texts))
        report: dict = {
            "batch_size": args.batch_size, "threads": args.threads, "rounds": args.rounds,
            "onnxruntime_version": ort.version,
            "model_check_min_cosine": check_against_latentdb(ort, args.latentdb, env),
            "load_average_before": os.getloadavg()[0],
            "sets": {},
        }
        if report["model_check_min_cosine"] < 0.9999:
            raise SystemExit(f"the ONNX graph disagrees with latentdb: {report}")
        for name, texts in sets.items():
            lengths = [sum(e.attention_mask) for e in ort.tok.encode_batch(texts)]
            runs: dict[str, list[float]] = {"latentdb": [], "ort_padded": [], "ort_sorted": []}
            ort.texts_per_s(texts, args.batch_size, False)  # warm-up
            order = list(runs)
            for r in range(args.rounds):
                for who in order[r % 3:] + order[:r % 3]:
                    if who == "latentdb":
                        rep = latentdb_texts_per_s(args.latentdb, files[name], args.batch_size,
                                                   args.threads, env)
                        runs[who].append(rep["texts_per_s"])
                    else:
                        runs[who].append(ort.texts_per_s(texts, args.batch_size,
                                                         who == "ort_sorted"))
            med = {k: statistics.median(v) for k, v in runs.items()}
            report["sets"][name] = {
                "texts": len(texts), "tokens_mean": sum(lengths) / len(lengths),
                "tokens_min": min(lengths), "tokens_max": max(lengths),
                "texts_per_s_runs": {k: [round(x, 1) for x in v] for k, v in runs.items()},
                "texts_per_s_median": {k: round(v, 1) for k, v in med.items()},
                "ratio_vs_ort_padded": round(med["latentdb"] / med["ort_padded"], 3),
                "ratio_vs_ort_sorted": round(med["latentdb"] / med["ort_sorted"], 3),
            }
            s = report["sets"][name]
            print(f"{name}: {s['texts']} texts, {s['tokens_mean']:.0f} tokens on average; "
                  f"texts/s latentdb {med['latentdb']:.1f}, onnxruntime padded "
                  f"{med['ort_padded']:.1f} / sorted {med['ort_sorted']:.1f}; ratios "
                  f"{s['ratio_vs_ort_padded']:.2f} / {s['ratio_vs_ort_sorted']:.2f}")
        report["load_average_after"] = os.getloadavg()[0]
        print(json.dumps(report))


if __name__ == "__main__":
    main()
