"""With the built-in default model (all-MiniLM-L6-v2): text collections, hybrid search,
embed, ingest and BEIR evaluation. Skipped locally when the model is not installed; a failure
under CI=true (see conftest.py)."""

import json

import numpy as np
import pytest

import latentdb
from conftest import FIXTURES

DOCS = {
    "rust": "Rust is a systems programming language focused on safety and speed",
    "python": "Python is a popular programming language for data science",
    "panda": "Giant pandas eat bamboo in the mountains of China",
    "bread": "Sourdough bread needs a starter, flour, water and salt",
}


@pytest.fixture
def text_col(model_db):
    col = model_db.create_collection("t", model="default")
    col.upsert(list(DOCS), texts=list(DOCS.values()), metadata=[{"n": i} for i in range(len(DOCS))])
    return col


def test_text_collection_and_modes(text_col):
    assert text_col.model == "default" and text_col.dim == 384
    hits = text_col.search(text="what do pandas eat?", k=2)
    assert hits[0].id == "panda"
    dense = text_col.search(text="coding languages", k=2, mode="dense")
    assert {h.id for h in dense} == {"rust", "python"}
    assert -1.0 <= dense[0].score <= 1.0
    lexical = text_col.search(text="bamboo", k=4, mode="lexical")
    assert [h.id for h in lexical] == ["panda"]
    hybrid = text_col.search(text="bread flour", k=3, mode="hybrid", explain=True)
    assert hybrid[0].id == "bread" and hybrid[0].explain["lexical_rank"] == 1
    # The positional str is a text query.
    assert text_col.search("salt and water", k=1)[0].id == "bread"
    filtered = text_col.search(text="programming", k=4, filter={"n": {"$gte": 1}}, mode="dense")
    assert "rust" not in {h.id for h in filtered}
    batch = text_col.search_batch(texts=["pandas", "sourdough"], k=1)
    assert [b[0].id for b in batch] == ["panda", "bread"]


def test_embed_matches_stored_vectors(model_db, text_col):
    v = model_db.embed([DOCS["rust"], DOCS["panda"]])
    assert v.shape == (2, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    stored = text_col.get("rust")[0].vector
    np.testing.assert_allclose(v[0], stored, atol=1e-4)
    # A stored vector searched as a vector finds its document.
    assert text_col.search(vector=v[1], k=1)[0].id == "panda"
    assert model_db.embed("one text").shape == (1, 384)
    assert model_db.embed([]).shape == (0, 384)
    with pytest.raises(latentdb.LatentDbError):
        model_db.embed(["x"], model="/nonexistent/model/dir")


def test_ingest(model_db, tmp_path):
    col = model_db.create_collection("docs", model="default")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.md").write_text("# Pandas\n\nGiant pandas eat bamboo.\n")
    (src / "sub" / "b.txt").write_text("Rust programs are compiled ahead of time. " * 40)
    (src / "c.jsonl").write_text(json.dumps({"id": "j1", "text": "Sourdough bread", "metadata": {"k": 1}}) + "\n")
    (src / "skip.bin").write_bytes(b"\x00\x01")
    seen = []
    stats = col.ingest(src, chunk_tokens=64, chunk_overlap=8, progress=seen.append)
    assert stats["files"] == 3 and stats["documents"] == 3 and stats["errors"] == 0
    assert stats["chunks"] >= 4 and col.count() == stats["chunks"]
    assert seen and seen[-1]["done"] and seen[-1]["chunks"] == stats["chunks"]
    hit = col.search(text="what do pandas eat", k=1, mode="dense")[0]
    assert hit.metadata["parent"].endswith("a.md") and hit.metadata["chunk_index"] == 0
    # A second run skips what is current.
    again = col.ingest([str(src)], chunk_tokens=64, chunk_overlap=8, progress=False)
    assert again["skipped"] == 3 and again["chunks"] == 0
    # glob, and a missing path counted as a problem.
    only = model_db.create_collection("md", model="default")
    s = only.ingest([src, tmp_path / "missing"], glob="*.md", progress=False)
    assert s["files"] == 1 and s["errors"] == 1 and len(s["problems"]) == 1
    with pytest.raises(latentdb.InvalidArgumentError):
        col.ingest(src, chunk_tokens=8, chunk_overlap=8, progress=False)
    with pytest.raises(latentdb.InvalidArgumentError):
        col.ingest(src, progress="yes")


def mini_beir(tmp_path, n_docs=150):
    """A small BEIR dataset cut from the spamassassin-subjects fixture: the first documents and
    the test queries judged only against them."""
    root = FIXTURES / "datasets" / "spamassassin-subjects"
    out = tmp_path / "beir"
    (out / "qrels").mkdir(parents=True)
    corpus = [json.loads(l) for l in (root / "corpus.jsonl").read_text().splitlines()[:n_docs]]
    ids = {d["_id"] for d in corpus}
    (out / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    lines = (root / "qrels" / "test.tsv").read_text().splitlines()
    header, rows = lines[0], [l.split("\t") for l in lines[1:]]
    by_q = {}
    for q, d, s in rows:
        by_q.setdefault(q, []).append((d, s))
    kept = {q: v for q, v in by_q.items() if all(d in ids for d, _ in v)}
    assert kept, "no test query judged within the first documents"
    (out / "qrels" / "test.tsv").write_text(
        header + "\n" + "".join(f"{q}\t{d}\t{s}\n" for q, v in kept.items() for d, s in v)
    )
    queries = [json.loads(l) for l in (root / "queries.jsonl").read_text().splitlines()]
    (out / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries if q["_id"] in kept))
    return out, len(kept)


def test_eval_beir(model_db, tmp_path):
    ds, nq = mini_beir(tmp_path)
    col = model_db.create_collection("spam", model="default")
    loaded = []
    r = col.eval_beir(ds, "test", progress=loaded.append)
    assert r["ingested"] == 150 and loaded[-1] == 150
    assert r["queries"] == nq and r["split"] == "test" and r["mode"] == "hybrid"
    for key in ("ndcg@10", "mrr@10", "recall@10", "recall@100"):
        assert 0.0 <= r[key] <= 1.0
    assert r["ndcg@10"] > 0.2
    exact = col.eval_beir(str(ds), split="test", exact=True, mode="dense")
    assert exact["ingested"] == 0 and exact["mode"] == "dense" and exact["exact"] is True
    assert abs(exact["ndcg@10"] - col.eval_beir(ds, mode="dense")["ndcg@10"]) <= 0.05
    with pytest.raises(latentdb.NotFoundError):
        col.eval_beir(ds, "nosuchsplit")
    with pytest.raises(latentdb.NotFoundError):
        col.eval_beir(tmp_path / "nowhere")


def test_ctrl_c_stops_an_ingest_between_file_groups(model_db, tmp_path):
    import _thread

    col = model_db.create_collection("intr", model="default")
    src = tmp_path / "many"
    src.mkdir()
    for i in range(300):  # two groups of files (at most 256 files per group)
        (src / f"f{i:03}.txt").write_text(f"note number {i}")
    interrupted = []

    def progress(stats):
        if not interrupted:
            interrupted.append(stats["chunks"])
            _thread.interrupt_main()

    with pytest.raises(KeyboardInterrupt):
        col.ingest(src, progress=progress)
    # Stopped after the first group: some files written, not all; a rerun completes it and
    # skips what was written.
    written = col.count()
    assert 0 < written <= 256
    stats = col.ingest(src, progress=False)
    assert stats["skipped"] == written and col.count() == 300


def test_ctrl_c_stops_an_eval_between_batches(model_db, tmp_path):
    import _thread

    ds, _ = mini_beir(tmp_path, n_docs=600)
    col = model_db.create_collection("intr_eval", model="default")
    seen = []

    def progress(n):
        seen.append(n)
        if len(seen) == 1:
            _thread.interrupt_main()

    with pytest.raises(KeyboardInterrupt):
        col.eval_beir(ds, "test", progress=progress)
    # Stopped after the first batch of the corpus (256 documents), which stays stored.
    assert seen == [256] and col.count() == 256
    # A progress callback that raises stops it too, with its own exception.
    col2 = model_db.create_collection("raising_eval", model="default")

    def boom(n):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        col2.eval_beir(ds, "test", progress=boom)
    assert col2.count() == 256
