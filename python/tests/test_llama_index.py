"""The LlamaIndex adapter, tested against the documented BasePydanticVectorStore contract:
add (ids returned, nodes with embeddings), query with VectorStoreQuery (top-k by similarity,
metadata filters with operators and conditions, doc_ids/node_ids), delete by ref_doc_id,
delete_nodes, get_nodes, clear, and use through VectorStoreIndex."""

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode  # noqa: E402
from llama_index.core.vector_stores.types import (  # noqa: E402
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

import latentdb  # noqa: E402
from conftest import require_default_model  # noqa: E402
from latentdb.llama_index import LatentDBVectorStore  # noqa: E402


def node(id, text, emb, doc, **meta):
    n = TextNode(id_=id, text=text, embedding=emb, metadata=meta)
    n.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=doc)
    return n


@pytest.fixture
def store(db):
    col = db.create_collection("li", dim=3, metric="cosine")
    s = LatentDBVectorStore(collection=col)
    ids = s.add(
        [
            node("n1", "alpha", [1, 0, 0], "docA", year=2019, tag="x"),
            node("n2", "beta", [0.9, 0.1, 0], "docA", year=2021, tag="y"),
            node("n3", "gamma", [0, 1, 0], "docB", year=2022, tag="x"),
            node("n4", "delta", [0, 0, 1], "docC", year=2023, tag="z"),
        ]
    )
    assert ids == ["n1", "n2", "n3", "n4"]
    return s


def ids_of(result):
    return [n.node_id for n in result.nodes]


def test_is_a_vector_store(store):
    assert isinstance(store, BasePydanticVectorStore)
    assert store.stores_text and isinstance(store.client, latentdb.Collection)


def test_query_top_k_and_node_round_trip(store):
    r = store.query(VectorStoreQuery(query_embedding=[1, 0, 0], similarity_top_k=2))
    assert ids_of(r) == ["n1", "n2"] and r.ids == ["n1", "n2"]
    assert r.similarities[0] == pytest.approx(1.0, abs=1e-5)
    assert r.similarities[0] >= r.similarities[1]
    n = r.nodes[0]
    assert n.get_content() == "alpha" and n.metadata == {"year": 2019, "tag": "x"}
    assert n.ref_doc_id == "docA"
    assert n.embedding == pytest.approx([1.0, 0.0, 0.0])


@pytest.mark.parametrize(
    "filters, expected",
    [
        (MetadataFilters(filters=[MetadataFilter(key="tag", value="x")]), ["n1", "n3"]),
        (MetadataFilters(filters=[MetadataFilter(key="year", value=2021, operator=FilterOperator.GT)]), ["n3", "n4"]),
        (MetadataFilters(filters=[MetadataFilter(key="year", value=2021, operator=FilterOperator.GTE)]), ["n2", "n3", "n4"]),
        (MetadataFilters(filters=[MetadataFilter(key="year", value=2021, operator=FilterOperator.LT)]), ["n1"]),
        (MetadataFilters(filters=[MetadataFilter(key="year", value=2021, operator=FilterOperator.LTE)]), ["n1", "n2"]),
        (MetadataFilters(filters=[MetadataFilter(key="tag", value="x", operator=FilterOperator.NE)]), ["n2", "n4"]),
        (MetadataFilters(filters=[MetadataFilter(key="tag", value=["y", "z"], operator=FilterOperator.IN)]), ["n2", "n4"]),
        (MetadataFilters(filters=[MetadataFilter(key="tag", value=["y", "z"], operator=FilterOperator.NIN)]), ["n1", "n3"]),
        (
            MetadataFilters(
                filters=[MetadataFilter(key="tag", value="x"), MetadataFilter(key="year", value=2020, operator=FilterOperator.GT)],
                condition=FilterCondition.AND,
            ),
            ["n3"],
        ),
        (
            MetadataFilters(
                filters=[MetadataFilter(key="tag", value="z"), MetadataFilter(key="year", value=2019)],
                condition=FilterCondition.OR,
            ),
            ["n1", "n4"],
        ),
        (
            MetadataFilters(
                filters=[
                    MetadataFilter(key="tag", value="y"),
                    MetadataFilters(
                        filters=[MetadataFilter(key="tag", value="x"), MetadataFilter(key="year", value=2022)],
                        condition=FilterCondition.AND,
                    ),
                ],
                condition=FilterCondition.OR,
            ),
            ["n2", "n3"],
        ),
        (
            MetadataFilters(filters=[MetadataFilter(key="tag", value="x")], condition=FilterCondition.NOT),
            ["n2", "n4"],
        ),
    ],
)
def test_query_metadata_filters(store, filters, expected):
    r = store.query(VectorStoreQuery(query_embedding=[1, 1, 1], similarity_top_k=10, filters=filters))
    assert sorted(ids_of(r)) == expected


def test_query_doc_ids_and_node_ids(store):
    r = store.query(VectorStoreQuery(query_embedding=[1, 0, 0], similarity_top_k=10, doc_ids=["docB", "docC"]))
    assert sorted(ids_of(r)) == ["n3", "n4"]
    r = store.query(VectorStoreQuery(query_embedding=[1, 0, 0], similarity_top_k=10, node_ids=["n2", "n4"]))
    assert ids_of(r) == ["n2", "n4"]


def test_unsupported_operator_is_refused(store):
    f = MetadataFilters(filters=[MetadataFilter(key="tag", value="x", operator=FilterOperator.TEXT_MATCH)])
    with pytest.raises(NotImplementedError):
        store.query(VectorStoreQuery(query_embedding=[1, 0, 0], similarity_top_k=1, filters=f))


def test_delete_by_ref_doc_id(store):
    store.delete("docA")
    r = store.query(VectorStoreQuery(query_embedding=[1, 0, 0], similarity_top_k=10))
    assert sorted(ids_of(r)) == ["n3", "n4"]
    store.delete("no-such-doc")
    assert store.client.count() == 2


def test_delete_nodes_get_nodes_clear(store):
    assert [n.node_id for n in store.get_nodes(node_ids=["n3", "zz", "n1"])] == ["n3", "n1"]
    tagged = store.get_nodes(filters=MetadataFilters(filters=[MetadataFilter(key="tag", value="x")]))
    assert sorted(n.node_id for n in tagged) == ["n1", "n3"]
    store.delete_nodes(node_ids=["n1"])
    assert store.client.count() == 3
    store.delete_nodes(filters=MetadataFilters(filters=[MetadataFilter(key="tag", value="z")]))
    assert sorted(n.node_id for n in store.get_nodes(node_ids=["n2", "n3", "n4"])) == ["n2", "n3"]
    store.delete_nodes(node_ids=["n2", "n3"], filters=MetadataFilters(filters=[MetadataFilter(key="tag", value="y")]))
    assert [n.node_id for n in store.get_nodes(node_ids=["n2", "n3"])] == ["n3"]
    store.clear()
    assert store.client.count() == 0
    r = store.query(VectorStoreQuery(query_embedding=[1, 0, 0], similarity_top_k=3))
    assert r.nodes == [] and r.ids == []


def test_upsert_replaces_by_node_id(store):
    store.add([node("n1", "alpha two", [0, 0, 1], "docA", year=2030, tag="w")])
    r = store.query(VectorStoreQuery(query_embedding=[0, 0, 1], similarity_top_k=2))
    assert ids_of(r)[0] in ("n1", "n4") and store.client.count() == 4
    got = store.get_nodes(node_ids=["n1"])[0]
    assert got.get_content() == "alpha two" and got.metadata == {"year": 2030, "tag": "w"}


def test_with_vector_store_index(db):
    from llama_index.core import Document, MockEmbedding, Settings, StorageContext, VectorStoreIndex

    col = db.create_collection("idx", dim=8)
    store = LatentDBVectorStore(collection=col)
    ctx = StorageContext.from_defaults(vector_store=store)
    Settings.embed_model = MockEmbedding(embed_dim=8)
    index = VectorStoreIndex.from_documents(
        [Document(text="hello world", doc_id="d1"), Document(text="goodbye moon", doc_id="d2")],
        storage_context=ctx,
        embed_model=MockEmbedding(embed_dim=8),
    )
    assert col.count() == 2
    nodes = index.as_retriever(similarity_top_k=2).retrieve("hello")
    assert {n.node.get_content() for n in nodes} == {"hello world", "goodbye moon"}
    index.delete_ref_doc("d1")
    assert col.count() == 1


def test_builtin_model_text_queries(model_db):
    require_default_model()
    col = model_db.create_collection("b", model="default")
    store = LatentDBVectorStore(collection=col)
    store.add(
        [
            TextNode(id_="p", text="Giant pandas eat bamboo"),
            TextNode(id_="r", text="Rust is a programming language"),
        ]
    )
    r = store.query(VectorStoreQuery(query_str="what do pandas eat", similarity_top_k=1))
    assert ids_of(r) == ["p"]
    r = store.query(VectorStoreQuery(query_str="programming", similarity_top_k=2, mode=VectorStoreQueryMode.TEXT_SEARCH))
    assert ids_of(r) == ["r"]
