"""Threads: searches run in parallel (the GIL is released) while a writer upserts; results
stay correct and nothing deadlocks. Ctrl-C stops a long upsert between batches."""

import _thread
import threading
import time

import numpy as np
import pytest

import latentdb


def test_searches_in_parallel_with_a_writer(db):
    dim = 16
    col = db.create_collection("t", dim=dim, metric="l2")
    rng = np.random.default_rng(7)
    base = rng.normal(size=(2000, dim)).astype(np.float32)
    col.upsert([f"b{i}" for i in range(len(base))], vectors=base)
    extra = rng.normal(size=(3000, dim)).astype(np.float32) + 100.0  # far from the base set
    errors = []
    done = threading.Event()

    def writer():
        try:
            for start in range(0, len(extra), 100):
                part = extra[start : start + 100]
                col.upsert([f"x{start + i}" for i in range(len(part))], vectors=part)
        except Exception as e:  # noqa: BLE001
            errors.append(e)
        finally:
            done.set()

    def searcher(seed):
        r = np.random.default_rng(seed)
        try:
            n = 0
            while not done.is_set() or n < 50:
                i = int(r.integers(len(base)))
                hits = col.search(base[i], k=5, exact=bool(n % 2))
                # The query's own point is always its nearest neighbour (distance 0).
                assert hits[0].id == f"b{i}", (hits[0].id, i)
                assert hits[0].score == pytest.approx(0.0, abs=1e-3)
                assert all(h.id.startswith("b") for h in hits)
                n += 1
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=searcher, args=(s,)) for s in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
        assert not t.is_alive(), "a thread is stuck (deadlock?)"
    assert not errors, errors
    assert col.count() == len(base) + len(extra)
    # The writer's documents are all searchable afterwards.
    hit = col.search(extra[1234], k=1)[0]
    assert hit.id == "x1234"


def test_gil_is_released_during_search(db):
    """A pure-Python thread makes progress while another thread is inside long searches."""
    dim = 64
    col = db.create_collection("g", dim=dim)
    rng = np.random.default_rng(1)
    col.upsert([str(i) for i in range(5000)], vectors=rng.normal(size=(5000, dim)).astype(np.float32))
    queries = rng.normal(size=(64, dim)).astype(np.float32)
    counter = [0]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            counter[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        before = counter[0]
        # One long native call (exact search of 64 queries over 5000 points, k=1000).
        col.search_batch(vectors=queries, k=1000, exact=True, include_text=False, include_metadata=False)
        during = counter[0] - before
    finally:
        stop.set()
        t.join()
    assert during > 0


def test_ctrl_c_stops_a_long_upsert_between_batches(db):
    col = db.create_collection("c", dim=8)
    n, batch = 200_000, 100
    vecs = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)

    def interrupt_once_writing():
        while col.count() == 0:
            time.sleep(0.001)
        _thread.interrupt_main()

    t = threading.Thread(target=interrupt_once_writing)
    t.start()
    with pytest.raises(KeyboardInterrupt):
        col.upsert([str(i) for i in range(n)], vectors=vecs, batch_size=batch)
    t.join()
    written = col.count()
    # Whole batches only: what was written is a multiple of the batch size, and not all.
    assert 0 < written < n
    assert written % batch == 0
