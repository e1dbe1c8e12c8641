#!/usr/bin/env python3
"""The reference side of `latentdb bench ann`: hnswlib (and faiss HNSW if installed) on the
same .npy files, same M / ef_construction, build with all threads, queries on one thread.

    pip install hnswlib numpy   # faiss-cpu optional
    latentdb bench gen-data --n 100000 --dim 384 --queries 1000 --gt-k 10 --out /tmp/ann
    python3 scripts/ann_hnswlib.py --dir /tmp/ann --ef 16,32,64,128,256
"""
import argparse
import json
import os
import time

import numpy as np


def recall(found, truth, k):
    hit = sum(len(set(f[:k]) & set(t[:k])) for f, t in zip(found, truth))
    return hit / (len(truth) * k)


def timed_queries(search_one, queries):
    lat = []
    found = []
    t0 = time.perf_counter()
    for q in queries:
        t = time.perf_counter()
        found.append(search_one(q))
        lat.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    lat.sort()
    return found, len(queries) / total, lat[len(lat) // 2] * 1e3, lat[int((len(lat) - 1) * 0.99)] * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--ef", default="16,32,64,128,256")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--faiss", action="store_true")
    a = ap.parse_args()
    base = np.load(os.path.join(a.dir, "base.npy")).astype(np.float32)
    queries = np.load(os.path.join(a.dir, "queries.npy")).astype(np.float32)
    truth = np.load(os.path.join(a.dir, "gt.npy"))
    efs = [int(e) for e in a.ef.split(",")]
    n, dim = base.shape

    import hnswlib
    idx = hnswlib.Index(space="cosine", dim=dim)
    idx.init_index(max_elements=n, M=a.m, ef_construction=a.ef_construction, random_seed=42)
    idx.set_num_threads(a.threads)
    t = time.perf_counter()
    idx.add_items(base, np.arange(n))
    build = time.perf_counter() - t
    print(json.dumps({"lib": "hnswlib", "phase": "build", "n": n, "dim": dim, "build_s": build,
                      "vectors_per_s": n / build, "threads": a.threads}))
    idx.set_num_threads(1)
    for ef in efs:
        idx.set_ef(max(ef, a.k))
        found, qps, p50, p99 = timed_queries(lambda q: idx.knn_query(q, k=a.k)[0][0].tolist(), queries)
        # All queries in one call on one thread: the library's speed without Python's
        # per-call overhead (the figure to beat).
        t = time.perf_counter()
        idx.knn_query(queries, k=a.k, num_threads=1)
        batch_qps = len(queries) / (time.perf_counter() - t)
        print(json.dumps({"lib": "hnswlib", "ef": ef, "recall": recall(found, truth, a.k), "qps": qps,
                          "batch_qps": batch_qps, "p50_ms": p50, "p99_ms": p99}))

    if a.faiss:
        import faiss
        faiss.omp_set_num_threads(a.threads)
        nb = base / np.linalg.norm(base, axis=1, keepdims=True)
        nq = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        fi = faiss.IndexHNSWFlat(dim, a.m, faiss.METRIC_INNER_PRODUCT)
        fi.hnsw.efConstruction = a.ef_construction
        t = time.perf_counter()
        fi.add(nb)
        build = time.perf_counter() - t
        print(json.dumps({"lib": "faiss", "phase": "build", "build_s": build, "vectors_per_s": n / build}))
        faiss.omp_set_num_threads(1)
        for ef in efs:
            fi.hnsw.efSearch = max(ef, a.k)
            found, qps, p50, p99 = timed_queries(lambda q: fi.search(q[None, :], a.k)[1][0].tolist(), nq)
            t = time.perf_counter()
            fi.search(nq, a.k)
            batch_qps = len(nq) / (time.perf_counter() - t)
            print(json.dumps({"lib": "faiss", "ef": ef, "recall": recall(found, truth, a.k), "qps": qps,
                              "batch_qps": batch_qps, "p50_ms": p50, "p99_ms": p99}))


if __name__ == "__main__":
    main()
