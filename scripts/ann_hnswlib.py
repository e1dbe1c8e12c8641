#!/usr/bin/env python3
"""The reference side of `latentdb bench ann`: hnswlib (and faiss HNSW if asked) on the
same .npy files, same M / ef_construction, build with all threads, queries on one thread.

    python3 -m venv /tmp/annvenv && /tmp/annvenv/bin/pip install numpy hnswlib faiss-cpu
    latentdb bench gen-data --n 100000 --dim 384 --queries 1000 --gt-k 10 --out /tmp/ann
    /tmp/annvenv/bin/python scripts/ann_hnswlib.py --dir /tmp/ann --ef 16,32,64,128,256 [--faiss]

Prints one JSON object per line: a build row per library, then one row per ef with recall,
QPS with one query per call (`qps`, `p50_ms`, `p99_ms`) and with all queries in one call on one
thread (`batch_qps`, `batch_recall`). Before the measured ef rows each library answers every
query once, untimed, as `latentdb bench ann` does. scripts/ann_compare.py runs this next to
`latentdb bench ann` and prints the ratios.

`--metric` must be the metric the ground truth was computed with (`gen-data --metric`):
cosine (hnswlib space "cosine"; faiss inner product on normalised copies, normalised outside
the timed calls), l2 (squared L2 in both) or dot (inner product, not normalised).
"""
import argparse
import json
import os
import statistics
import sys
import time

PIP_HINT = "python3 -m venv /tmp/annvenv && /tmp/annvenv/bin/pip install numpy hnswlib faiss-cpu"

try:
    import numpy as np
except ImportError:
    sys.exit(f"numpy is not installed for {sys.executable}: {PIP_HINT}")

METRICS = ("cosine", "l2", "dot")


def import_hnswlib():
    try:
        import hnswlib
    except ImportError:
        sys.exit(f"hnswlib is not installed for {sys.executable}: {PIP_HINT}")
    return hnswlib


def import_faiss():
    try:
        import faiss
    except ImportError:
        sys.exit(f"faiss is not installed for {sys.executable}: {PIP_HINT}")
    return faiss


def lib_version(name):
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # not installed as a distribution: no version to report
        return None


def load_dir(d, k):
    """base, queries and the first k ground-truth columns from a `gen-data` directory."""
    paths = {name: os.path.join(d, name + ".npy") for name in ("base", "queries", "gt")}
    for name, p in paths.items():
        if not os.path.isfile(p):
            hint = " (write it with `latentdb bench gen-data --gt-k K`)" if name == "gt" else ""
            sys.exit(f"{p} is missing{hint}")
    base = np.ascontiguousarray(np.load(paths["base"]), dtype=np.float32)
    queries = np.ascontiguousarray(np.load(paths["queries"]), dtype=np.float32)
    truth = np.load(paths["gt"])
    if base.ndim != 2 or queries.ndim != 2 or truth.ndim != 2:
        sys.exit("base.npy, queries.npy and gt.npy must be 2-d arrays")
    if base.shape[0] == 0 or queries.shape[0] == 0 or base.shape[1] != queries.shape[1]:
        sys.exit(f"base is {base.shape} and queries {queries.shape}: need non-empty arrays of one dimension")
    if truth.shape[0] != queries.shape[0] or truth.shape[1] < k:
        sys.exit(f"gt.npy is {truth.shape}, need ({queries.shape[0]}, >= {k})")
    return base, queries, truth[:, :k].astype(np.int64)


def recall(found, truth, k):
    hit = sum(len(set(np.asarray(f)[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth))
    return hit / (len(truth) * k)


def percentile(sorted_values, p):
    return sorted_values[round((len(sorted_values) - 1) * p)]


def timed_queries(search_one, queries):
    """One query per call: (results, QPS, latencies in seconds)."""
    lat = []
    found = []
    t0 = time.perf_counter()
    for q in queries:
        t = time.perf_counter()
        found.append(search_one(q))
        lat.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    return found, len(queries) / total, lat


def timed_batch(search_all, queries):
    """All queries in one call: (results, QPS)."""
    t = time.perf_counter()
    found = search_all(queries)
    return found, len(queries) / (time.perf_counter() - t)


def measure(lib, search_one, search_all, queries, truth, k, efs, set_ef, passes=1):
    """Per ef: recall and QPS one query per call and all in one call. With `passes` > 1 every
    ef is timed that many times, cycling through the list, and its row has the median QPS of
    each kind (latency percentiles over all passes), as `latentdb bench ann --passes` does:
    a host whose speed drifts within seconds then skews no single ef."""
    # One untimed pass first, as `latentdb bench ann` does, so that the first ef measured does
    # not pay for warming the caches.
    set_ef(max(efs[0], k))
    for q in queries:
        search_one(q)
    timed = [{"qps": [], "batch_qps": [], "lat": []} for _ in efs]
    for _ in range(passes):
        for ef, t in zip(efs, timed):
            set_ef(max(ef, k))
            found, qps, lat = timed_queries(search_one, queries)
            # All queries in one call on one thread: the library's speed without Python's
            # per-call overhead (the figure to beat).
            bfound, batch_qps = timed_batch(search_all, queries)
            t["qps"].append(qps)
            t["batch_qps"].append(batch_qps)
            t["lat"].extend(lat)
            t["found"], t["bfound"] = found, bfound
    rows = []
    for ef, t in zip(efs, timed):
        lat = sorted(t["lat"])
        rows.append({"lib": lib, "ef": max(ef, k), "k": k, "recall": recall(t["found"], truth, k),
                     "qps": statistics.median(t["qps"]), "passes": passes,
                     "p50_ms": percentile(lat, 0.5) * 1e3, "p99_ms": percentile(lat, 0.99) * 1e3,
                     "batch_qps": statistics.median(t["batch_qps"]),
                     "batch_recall": recall(t["bfound"], truth, k)})
    return rows


def run_hnswlib(base, queries, truth, k, m, ef_construction, efs, threads, metric, seed=42, passes=1):
    """Build with `threads` threads, search on one: {"build": {...}, "rows": [...]}."""
    hnswlib = import_hnswlib()
    n, dim = base.shape
    space = {"cosine": "cosine", "l2": "l2", "dot": "ip"}[metric]
    t = time.perf_counter()
    idx = hnswlib.Index(space=space, dim=dim)
    idx.init_index(max_elements=n, M=m, ef_construction=ef_construction, random_seed=seed)
    idx.set_num_threads(threads)
    idx.add_items(base, np.arange(n))
    build_s = time.perf_counter() - t
    build = {"lib": "hnswlib", "phase": "build", "version": lib_version("hnswlib"), "n": n, "dim": dim,
             "metric": metric, "m": m, "ef_construction": ef_construction, "threads": threads,
             "build_s": build_s, "vectors_per_s": n / build_s}
    idx.set_num_threads(1)
    rows = measure(
        "hnswlib",
        lambda q: idx.knn_query(q, k=k, num_threads=1)[0][0],
        lambda qs: idx.knn_query(qs, k=k, num_threads=1)[0],
        queries, truth, k, efs, idx.set_ef, passes)
    return {"build": build, "rows": rows}


def run_faiss(base, queries, truth, k, m, ef_construction, efs, threads, metric, passes=1):
    """faiss IndexHNSWFlat, same M and efConstruction: {"build": {...}, "rows": [...]}."""
    faiss = import_faiss()
    n, dim = base.shape
    if metric == "cosine":
        base = base / np.linalg.norm(base, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    base = np.ascontiguousarray(base, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    fmetric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    faiss.omp_set_num_threads(threads)
    t = time.perf_counter()
    fi = faiss.IndexHNSWFlat(dim, m, fmetric)
    fi.hnsw.efConstruction = ef_construction
    fi.add(base)
    build_s = time.perf_counter() - t
    build = {"lib": "faiss", "phase": "build", "version": faiss.__version__, "n": n, "dim": dim,
             "metric": metric, "m": m, "ef_construction": ef_construction, "threads": threads,
             "build_s": build_s, "vectors_per_s": n / build_s}
    faiss.omp_set_num_threads(1)

    def set_ef(ef):
        fi.hnsw.efSearch = ef

    rows = measure(
        "faiss",
        lambda q: fi.search(q[None, :], k)[1][0],
        lambda qs: fi.search(qs, k)[1],
        queries, truth, k, efs, set_ef, passes)
    return {"build": build, "rows": rows}


def parse_efs(s):
    try:
        efs = [int(e) for e in s.split(",") if e.strip()]
    except ValueError:
        sys.exit(f"--ef must be comma-separated integers, got {s!r}")
    if not efs or min(efs) <= 0:
        sys.exit(f"--ef must be positive integers, got {s!r}")
    return efs


def default_threads():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="base.npy, queries.npy, gt.npy (latentdb bench gen-data)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--ef", default="16,32,64,128,256")
    ap.add_argument("--threads", type=int, default=default_threads(), help="build threads (default: all)")
    ap.add_argument("--metric", choices=METRICS, default="cosine",
                    help="the metric of gt.npy (default cosine)")
    ap.add_argument("--faiss", action="store_true", help="also faiss IndexHNSWFlat")
    ap.add_argument("--passes", type=int, default=1, help="timed passes per ef (median QPS)")
    a = ap.parse_args()
    if a.k <= 0 or a.m <= 0 or a.ef_construction <= 0 or a.threads <= 0 or a.passes <= 0:
        sys.exit("--k, --m, --ef-construction, --threads and --passes must be positive")
    efs = parse_efs(a.ef)
    base, queries, truth = load_dir(a.dir, a.k)
    runs = [run_hnswlib]
    if a.faiss:
        runs.append(run_faiss)
    for run in runs:
        r = run(base, queries, truth, a.k, a.m, a.ef_construction, efs, a.threads, a.metric,
                passes=a.passes)
        print(json.dumps(r["build"]), flush=True)
        for row in r["rows"]:
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
