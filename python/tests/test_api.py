"""The core API on vectors-only collections: every method, numpy round trips, errors."""

import numpy as np
import pytest

import latentdb


def unit(rows):
    a = np.asarray(rows, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


@pytest.fixture
def col(db):
    return db.create_collection("v", dim=4, metric="cosine")


def test_open_create_list_get_drop(db, tmp_path):
    assert db.list_collections() == []
    c = db.create_collection("a", dim=3)
    db.create_collection("b", dim=2, metric="l2")
    assert db.list_collections() == ["a", "b"]
    assert c.name == "a" and c.dim == 3 and c.metric == "cosine" and c.model is None
    assert db.get_collection("b").metric == "l2"
    assert db.get_or_create_collection("a", dim=99).dim == 3
    assert db.get_or_create_collection("c", dim=5, metric="dot").metric == "dot"
    info = c.info()
    assert info["name"] == "a" and info["dimension"] == 3 and info["count"] == 0
    db.drop_collection("a")
    assert db.list_collections() == ["b", "c"]
    with pytest.raises(latentdb.NotFoundError):
        db.get_collection("a")
    assert str(db.path).endswith("db")
    assert db.quarantined() == {}
    with latentdb.open(tmp_path / "other") as other:
        assert other.list_collections() == []


def test_upsert_get_numpy_round_trip(col):
    vecs = unit(np.random.default_rng(1).normal(size=(5, 4)))
    ids = col.upsert(
        [f"d{i}" for i in range(5)],
        vectors=vecs,
        texts=[f"text {i}" for i in range(4)] + [None],
        metadata=[{"i": i, "tags": ["x", "y"], "f": 0.5, "ok": True, "none": None} for i in range(5)],
    )
    assert ids == [f"d{i}" for i in range(5)]
    assert col.count() == 5 and len(col) == 5
    got = col.get(["d0", "missing", "d4"])
    assert got[1] is None
    r0, r4 = got[0], got[2]
    assert r0.id == "d0" and r0.text == "text 0" and r4.text is None
    assert r0.metadata == {"i": 0, "tags": ["x", "y"], "f": 0.5, "ok": True, "none": None}
    assert isinstance(r0.vector, np.ndarray) and r0.vector.dtype == np.float32
    assert r0.vector.shape == (4,)
    np.testing.assert_allclose(r0.vector, vecs[0], atol=1e-6)
    np.testing.assert_allclose(r4.vector, vecs[4], atol=1e-6)
    assert r0.to_dict()["id"] == "d0"
    # A single id as a str.
    assert col.get("d1")[0].id == "d1"


def test_vectors_as_lists_float64_and_generated_ids(col):
    ids = col.upsert(vectors=[[1, 0, 0, 0], [0.0, 1.0, 0.0, 0.0]])
    assert len(ids) == 2 and all(isinstance(i, str) and i for i in ids)
    col.upsert(["f64"], vectors=np.array([[0, 0, 1, 0]], dtype=np.float64))
    col.upsert(["rows"], vectors=[np.array([0, 0, 0, 1], dtype=np.float32)])
    hit = col.search(np.array([0, 0, 1, 0], dtype=np.float64), k=1)[0]
    assert hit.id == "f64" and hit.score == pytest.approx(1.0, abs=1e-5)
    assert col.search([0, 0, 0, 1], k=1)[0].id == "rows"
    # Non-contiguous (strided) arrays are read correctly.
    m = np.zeros((2, 8), dtype=np.float32)
    m[:, ::2] = [[1, 2, 3, 4], [4, 3, 2, 1]]
    col.upsert(["s1", "s2"], vectors=m[:, ::2])
    np.testing.assert_allclose(col.get("s2")[0].vector, [4, 3, 2, 1], atol=1e-6)


def test_search_scores_filters_and_includes(col):
    vecs = unit([[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
    col.upsert(
        ["a", "b", "c", "d"],
        vectors=vecs,
        texts=["alpha", "beta", "gamma", "delta"],
        metadata=[{"year": 2019}, {"year": 2021}, {"year": 2022}, {"year": 2023}],
    )
    hits = col.search(vector=vecs[0], k=3)
    assert [h.id for h in hits] == ["a", "b", "c"]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[1].score == pytest.approx(float(vecs[0] @ vecs[1]), abs=1e-5)
    assert hits[0].text == "alpha" and hits[0].metadata == {"year": 2019}
    assert hits[0].vector is None and hits[0].explain is None
    hits = col.search(vector=vecs[0], k=10, filter={"year": {"$gte": 2021}}, ef=50)
    assert [h.id for h in hits] == ["b", "c", "d"]
    hits = col.search(vecs[0], k=2, include_vectors=True, include_text=False, include_metadata=False)
    assert hits[0].text is None and hits[0].metadata == {}
    np.testing.assert_allclose(hits[0].vector, vecs[0], atol=1e-6)
    exact = col.search(vecs[2], k=4, exact=True)
    assert [h.id for h in exact][:1] == ["c"]
    d = exact[0].to_dict()
    assert d["id"] == "c" and "score" in d
    assert "Hit(" in repr(exact[0])


def test_search_batch(col):
    vecs = unit(np.eye(4))
    col.upsert(["a", "b", "c", "d"], vectors=vecs)
    res = col.search_batch(vectors=vecs, k=1)
    assert [r[0].id for r in res] == ["a", "b", "c", "d"]
    res = col.search_batch(vectors=[[0, 0, 0, 1]], k=2, filter={"$not": {"x": 1}})
    assert res[0][0].id == "d"


def test_lexical_search_on_stored_text(col):
    col.upsert(["a", "b"], vectors=unit(np.eye(2, 4)), texts=["red apples", "green pears"])
    hits = col.search(text="pears", mode="lexical", k=2)
    assert [h.id for h in hits] == ["b"]
    # A vector and a text: hybrid, with explain.
    hits = col.search(vector=[1, 0, 0, 0], text="pears", mode="hybrid", k=2, explain=True)
    assert {h.id for h in hits} == {"a", "b"}
    e = {h.id: h.explain for h in hits}
    assert e["b"]["lexical_rank"] == 1 and e["a"]["dense_rank"] == 1
    assert all(x["fused_score"] is not None for x in e.values())


def test_delete_by_ids_and_filter(col):
    col.upsert(
        ["a", "b", "c"],
        vectors=unit(np.eye(3, 4)),
        metadata=[{"k": "x"}, {"k": "y"}, {"k": "x"}],
    )
    assert col.delete(["a", "missing"]) == ["a"]
    assert col.count() == 2
    assert sorted(col.delete(where={"k": "x"})) == ["c"]
    assert col.count() == 1
    assert col.delete("b") == ["b"]
    col.upsert(["z"], vectors=[[1, 1, 1, 1]])
    assert col.clear() == 1 and col.count() == 0


def test_compact(col):
    col.upsert([str(i) for i in range(20)], vectors=np.random.default_rng(0).random((20, 4), dtype=np.float32))
    col.delete([str(i) for i in range(10)])
    r = col.compact()
    assert r["dropped"] == 10 and r["after_total"] == 10


# ---- errors: one exception class per kind, and each bad-input class ------------------------


def test_exception_hierarchy():
    kinds = [
        latentdb.InvalidArgumentError,
        latentdb.NotFoundError,
        latentdb.AlreadyExistsError,
        latentdb.FailedPreconditionError,
        latentdb.ResourceExhaustedError,
        latentdb.UnavailableError,
        latentdb.CancelledError,
        latentdb.DeadlineExceededError,
        latentdb.DataLossError,
        latentdb.InternalError,
    ]
    assert len(set(kinds)) == 10
    for k in kinds:
        assert issubclass(k, latentdb.LatentDbError) and k.__module__ == "latentdb"
    assert issubclass(latentdb.InvalidArgumentError, ValueError)
    assert issubclass(latentdb.NotFoundError, LookupError)


@pytest.mark.parametrize(
    "vectors, message",
    [
        (np.zeros((1, 4), dtype=np.int64), "dtype"),
        (np.zeros((1, 4), dtype=np.float16), "dtype"),
        (np.zeros((1, 4), dtype=np.complex64), "dtype"),
        (np.array([["a", "b", "c", "d"]]), "dtype"),
        (np.zeros((1, 2, 4), dtype=np.float32), "2-dimensional"),
        (np.zeros((1, 5), dtype=np.float32), "dimension"),
        (np.zeros((1, 3), dtype=np.float32), "dimension"),
        ([[1, 2, "x", 4]], "number"),
        ([[1, 2, 3, 4], [1, 2]], "dimension"),
        ("abcd", "not a str"),
        (42, "list of vectors"),
        (np.full((1, 4), np.nan, dtype=np.float32), None),
        (np.full((1, 4), np.inf, dtype=np.float32), None),
        (np.zeros((1, 4), dtype=np.float32), None),  # a zero vector cannot be normalised (cosine)
    ],
)
def test_bad_vectors_are_invalid_argument(col, vectors, message):
    with pytest.raises(latentdb.InvalidArgumentError, match=message):
        col.upsert(["x"] * (len(vectors) if not isinstance(vectors, (str, int)) else 1), vectors=vectors)
    assert col.count() == 0


def test_bad_query_vectors(col):
    col.upsert(["a"], vectors=[[1, 0, 0, 0]])
    for bad in (np.zeros((2, 4), dtype=np.float32), np.zeros(3, dtype=np.float32), np.zeros(4, dtype=np.int32), [1, None, 0, 0]):
        with pytest.raises(latentdb.InvalidArgumentError):
            col.search(vector=bad)
    with pytest.raises(latentdb.InvalidArgumentError, match="k must be at least 1"):
        col.search([1, 0, 0, 0], k=0)
    with pytest.raises(latentdb.InvalidArgumentError):
        col.search([1, 0, 0, 0], k=latentdb.MAX_K + 1)
    with pytest.raises(latentdb.InvalidArgumentError, match="ef"):
        col.search([1, 0, 0, 0], k=5, ef=2)
    with pytest.raises(latentdb.InvalidArgumentError):
        col.search([1, 0, 0, 0], filter={"year": {"$bogus": 1}})
    with pytest.raises(latentdb.InvalidArgumentError):
        col.search([1, 0, 0, 0], filter="year > 3")
    with pytest.raises(latentdb.InvalidArgumentError, match="mode"):
        col.search([1, 0, 0, 0], mode="fuzzy")
    with pytest.raises(latentdb.InvalidArgumentError, match="needs vector"):
        col.search()
    with pytest.raises(OverflowError):
        col.search([1, 0, 0, 0], k=-1)


def test_bad_arguments(db, col):
    with pytest.raises(latentdb.InvalidArgumentError, match="metric"):
        db.create_collection("m", dim=3, metric="manhattan")
    with pytest.raises(latentdb.InvalidArgumentError, match="dim"):
        db.create_collection("m")
    with pytest.raises(latentdb.InvalidArgumentError):
        db.create_collection("bad name!", dim=3)
    with pytest.raises(latentdb.InvalidArgumentError):
        db.create_collection("zero", dim=0)
    with pytest.raises(latentdb.AlreadyExistsError):
        db.create_collection("v", dim=4)
    with pytest.raises(latentdb.NotFoundError):
        db.drop_collection("nope")
    with pytest.raises(latentdb.InvalidArgumentError, match="one entry per document"):
        col.upsert(["a", "b"], vectors=[[1, 0, 0, 0]])
    with pytest.raises(latentdb.InvalidArgumentError, match="vectors or texts"):
        col.upsert(["a"])
    with pytest.raises(latentdb.InvalidArgumentError, match="ids\\[1\\]"):
        col.upsert(["a", 2], vectors=[[1, 0, 0, 0], [0, 1, 0, 0]])
    with pytest.raises(latentdb.InvalidArgumentError, match="list of dicts"):
        col.upsert(["a"], vectors=[[1, 0, 0, 0]], metadata={"a": 1})
    with pytest.raises(latentdb.InvalidArgumentError, match="keys must be str"):
        col.upsert(["a"], vectors=[[1, 0, 0, 0]], metadata=[{1: "x"}])
    with pytest.raises(latentdb.InvalidArgumentError, match="finite"):
        col.upsert(["a"], vectors=[[1, 0, 0, 0]], metadata=[{"x": float("nan")}])
    with pytest.raises(latentdb.InvalidArgumentError, match="JSON"):
        col.upsert(["a"], vectors=[[1, 0, 0, 0]], metadata=[{"x": object()}])
    with pytest.raises(latentdb.InvalidArgumentError, match="64 bits"):
        col.upsert(["a"], vectors=[[1, 0, 0, 0]], metadata=[{"x": 2**70}])
    deep = {}
    cur = deep
    for _ in range(200):
        cur["x"] = {}
        cur = cur["x"]
    with pytest.raises(latentdb.InvalidArgumentError, match="nested"):
        col.upsert(["a"], vectors=[[1, 0, 0, 0]], metadata=[deep])
    with pytest.raises(latentdb.InvalidArgumentError):
        col.upsert([""], vectors=[[1, 0, 0, 0]])
    with pytest.raises(latentdb.InvalidArgumentError, match="batch_size"):
        col.upsert(["a"], vectors=[[1, 0, 0, 0]], batch_size=0)
    with pytest.raises(latentdb.InvalidArgumentError, match="not both"):
        col.delete(["a"], where={"x": 1})
    with pytest.raises(latentdb.InvalidArgumentError, match="needs ids"):
        col.delete()
    with pytest.raises(latentdb.InvalidArgumentError, match="durability"):
        latentdb.open(db.path / "x", durability="sometimes")
    assert col.count() == 0


def test_numpy_scalars_in_metadata(col):
    col.upsert(["a"], vectors=[[1, 0, 0, 0]], metadata=[{"f": np.float32(1.5), "i": np.int64(3), "b": np.bool_(True)}])
    assert col.get("a")[0].metadata == {"f": 1.5, "i": 3, "b": True}


def test_failed_precondition_text_query_without_model(col, tmp_path):
    col.upsert(["a"], vectors=[[1, 0, 0, 0]])
    with pytest.raises(latentdb.FailedPreconditionError):
        col.search(text="hello")
    (tmp_path / "a.txt").write_text("some text")
    with pytest.raises(latentdb.FailedPreconditionError, match="no model"):
        col.ingest(tmp_path / "a.txt", progress=False)
    with pytest.raises(latentdb.InvalidArgumentError, match="at least one path"):
        col.ingest([], progress=False)


def test_second_open_of_a_directory_is_unavailable(db):
    with pytest.raises(latentdb.LatentDbError) as e:
        latentdb.open(db.path)
    assert isinstance(e.value, latentdb.UnavailableError), type(e.value)


def test_dropped_collection_handle_is_not_found(db):
    c = db.create_collection("gone", dim=2)
    db.drop_collection("gone")
    with pytest.raises(latentdb.NotFoundError):
        c.count()
    with pytest.raises(latentdb.NotFoundError):
        c.upsert(["a"], vectors=[[1, 0]])


def test_reopen_keeps_data(tmp_path):
    db = latentdb.open(tmp_path / "r")
    c = db.create_collection("p", dim=2, metric="l2")
    c.upsert(["a", "b"], vectors=[[0, 0], [3, 4]], metadata=[{"n": 1}, None])
    del c, db
    import gc

    gc.collect()
    db = latentdb.open(tmp_path / "r")
    c = db.get_collection("p")
    assert c.count() == 2
    hit = c.search([0, 0], k=2)[1]
    assert hit.id == "b" and hit.score == pytest.approx(-5.0, abs=1e-4)


def test_large_upsert_in_batches(col):
    n = 5000
    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(n, 4)).astype(np.float32)
    ids = col.upsert([f"id{i}" for i in range(n)], vectors=vecs, batch_size=700)
    assert len(ids) == n and col.count() == n
    hit = col.search(vecs[1234], k=1, exact=True)[0]
    assert hit.id == "id1234"
