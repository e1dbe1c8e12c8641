"""The LangChain adapter: LangChain's own standard vector-store suite
(langchain_tests.integration_tests.VectorStoreIntegrationTests, with its deterministic fake
embeddings), plus filters, scores, MMR, from_texts and latentdb's built-in model."""

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import DeterministicFakeEmbedding  # noqa: E402
from langchain_tests.integration_tests import VectorStoreIntegrationTests  # noqa: E402

import latentdb  # noqa: E402
from conftest import require_default_model  # noqa: E402
from latentdb.langchain import LatentDBVectorStore  # noqa: E402


class TestLatentDBStandard(VectorStoreIntegrationTests):
    @pytest.fixture()
    def vectorstore(self, tmp_path):
        db = latentdb.open(tmp_path / "lc")
        emb = self.get_embeddings()
        col = db.create_collection("lc", dim=len(emb.embed_query("x")), metric="cosine")
        return LatentDBVectorStore(col, emb)


def test_filters_scores_and_mmr(tmp_path):
    emb = DeterministicFakeEmbedding(size=8)
    store = LatentDBVectorStore.from_texts(
        ["apple", "banana", "cherry", "date"],
        emb,
        metadatas=[{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}],
        ids=["a", "b", "c", "d"],
        path=str(tmp_path / "db"),
        collection_name="fruit",
    )
    assert store.embeddings is emb and store.collection.count() == 4
    docs = store.similarity_search("cherry", k=4, filter={"n": {"$gte": 3}})
    assert [d.id for d in docs] == ["c", "d"]
    scored = store.similarity_search_with_score("cherry", k=1)
    assert scored[0][0].page_content == "cherry" and scored[0][1] == pytest.approx(1.0, abs=1e-5)
    rel = store.similarity_search_with_relevance_scores("cherry", k=2)
    assert rel[0][1] == pytest.approx(1.0, abs=1e-5) and 0.0 <= rel[1][1] <= 1.0
    by_vec = store.similarity_search_by_vector(emb.embed_query("date"), k=1)
    assert by_vec[0].id == "d"
    mmr = store.max_marginal_relevance_search("apple", k=2, fetch_k=4)
    assert len(mmr) == 2 and mmr[0].id == "a"
    store.delete(filter={"n": 1})
    assert store.get_by_ids(["a", "b"]) == [Document(id="b", page_content="banana", metadata={"n": 2})]
    retriever = store.as_retriever(search_kwargs={"k": 1})
    assert retriever.invoke("banana")[0].id == "b"
    with pytest.raises(latentdb.InvalidArgumentError):
        store.add_texts(["x"], ids=["1", "2"])
    with pytest.raises(latentdb.InvalidArgumentError):
        store.similarity_search("x", filter={"n": {"$nope": 1}})


def test_vectors_only_collection_needs_embeddings(db):
    col = db.create_collection("v", dim=3)
    with pytest.raises(latentdb.FailedPreconditionError):
        LatentDBVectorStore(col)


def test_builtin_model(tmp_path):
    require_default_model()
    store = LatentDBVectorStore.from_texts(
        ["Giant pandas eat bamboo", "Rust is a programming language", "Sourdough needs flour"],
        metadatas=[{"k": "animal"}, {"k": "tech"}, {"k": "food"}],
        path=str(tmp_path / "m"),
        collection_name="builtin",
    )
    assert store.embeddings is None and store.collection.model == "default"
    assert store.similarity_search("what do pandas eat", k=1)[0].metadata == {"k": "animal"}
    dense = LatentDBVectorStore(store.collection, mode="dense")
    hits = dense.similarity_search_with_relevance_scores("a compiled language", k=1)
    assert hits[0][0].page_content.startswith("Rust") and 0.5 < hits[0][1] <= 1.0
    ids = dense.add_documents([Document(page_content="Bread is baked in an oven")])
    assert dense.get_by_ids(ids)[0].page_content == "Bread is baked in an oven"
