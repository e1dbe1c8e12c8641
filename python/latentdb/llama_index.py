"""A LlamaIndex vector store (``BasePydanticVectorStore``) over a latentdb collection (needs
``llama-index-core``).

    import latentdb
    from latentdb.llama_index import LatentDBVectorStore
    from llama_index.core import StorageContext, VectorStoreIndex

    col = latentdb.open("./mydb").get_or_create_collection("docs", dim=384)
    store = LatentDBVectorStore(collection=col)
    index = VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(vector_store=store))

Nodes are stored with their id, text, embedding and metadata (LlamaIndex's own node JSON
included, as ``node_to_metadata_dict`` writes it, so that nodes come back whole). Queries use
``query_embedding`` (dense) or, on a collection with a built-in model and no embedding,
``query_str`` (hybrid by default; ``VectorStoreQueryMode.TEXT_SEARCH`` runs BM25 alone,
``HYBRID`` both fused). ``MetadataFilters`` map to latentdb filters: ``== != > >= < <= in nin``,
``any``/``contains`` and ``is_empty``, combined with ``and``/``or``/``not``.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

import numpy as np
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode, MetadataMode, TextNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

import latentdb

__all__ = ["LatentDBVectorStore", "to_latentdb_filter"]

#: The metadata key holding the node id (for node_ids filters).
_NODE_ID = "_node_id"

_OPS = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
}


def _one(f: MetadataFilter) -> dict:
    op = f.operator
    if op in _OPS:
        return {f.key: {_OPS[op]: f.value}}
    if op in (FilterOperator.ANY, FilterOperator.CONTAINS):
        # latentdb's $in on an array field matches when any element is in the list.
        values = f.value if isinstance(f.value, list) else [f.value]
        return {f.key: {"$in": values}}
    if op == FilterOperator.IS_EMPTY:
        return {"$or": [{f.key: {"$exists": False}}, {f.key: {"$eq": None}}]}
    raise NotImplementedError(f"latentdb does not support the filter operator {op.value!r}")


def to_latentdb_filter(filters: Optional[MetadataFilters]) -> Optional[dict]:
    """LlamaIndex ``MetadataFilters`` as a latentdb filter dict (``None`` for none)."""
    if filters is None or not filters.filters:
        return None
    parts = [
        to_latentdb_filter(f) if isinstance(f, MetadataFilters) else _one(f)
        for f in filters.filters
    ]
    parts = [p for p in parts if p is not None]
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.NOT:
        inner = parts[0] if len(parts) == 1 else {"$and": parts}
        return {"$not": inner}
    if len(parts) == 1:
        return parts[0]
    return {"$or" if condition == FilterCondition.OR else "$and": parts}


class LatentDBVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store backed by a `latentdb.Collection`."""

    stores_text: bool = True
    flat_metadata: bool = False

    _collection: latentdb.Collection = PrivateAttr()

    def __init__(self, collection: latentdb.Collection, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._collection = collection

    @classmethod
    def class_name(cls) -> str:
        return "LatentDBVectorStore"

    @property
    def client(self) -> latentdb.Collection:
        """The latentdb collection."""
        return self._collection

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> List[str]:
        """Adds (or replaces, by node id) nodes; returns their ids. Nodes without an
        embedding are embedded by the collection's model (collections created with one)."""
        if not nodes:
            return []
        ids = [n.node_id for n in nodes]
        texts = [n.get_content(metadata_mode=MetadataMode.NONE) for n in nodes]
        metadata = [
            {
                **node_to_metadata_dict(n, remove_text=True, flat_metadata=self.flat_metadata),
                _NODE_ID: n.node_id,
            }
            for n in nodes
        ]
        embeddings = [n.embedding for n in nodes]
        if all(e is not None for e in embeddings):
            vectors = np.asarray(embeddings, dtype=np.float32)
            return self._collection.upsert(ids, vectors=vectors, texts=texts, metadata=metadata)
        if any(e is not None for e in embeddings):
            raise latentdb.InvalidArgumentError(
                "either every node has an embedding or none has (the collection's model embeds them)"
            )
        return self._collection.upsert(ids, texts=texts, metadata=metadata)

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Deletes the nodes of the source document ``ref_doc_id``."""
        self._collection.delete(where={"ref_doc_id": ref_doc_id})

    def delete_nodes(
        self,
        node_ids: Optional[List[str]] = None,
        filters: Optional[MetadataFilters] = None,
        **delete_kwargs: Any,
    ) -> None:
        """Deletes nodes by id, by filters, or those of ``node_ids`` matching ``filters``."""
        where = to_latentdb_filter(filters)
        if node_ids is None and where is None:
            return
        if node_ids is not None and where is None:
            if node_ids:
                self._collection.delete(list(node_ids))
            return
        if node_ids is not None:
            kept = {r.id for r in self._matching(where) if r.id in set(node_ids)}
            if kept:
                self._collection.delete(sorted(kept))
            return
        self._collection.delete(where=where)

    def clear(self) -> None:
        """Deletes every node."""
        self._collection.clear()

    def get_nodes(
        self,
        node_ids: Optional[List[str]] = None,
        filters: Optional[MetadataFilters] = None,
    ) -> List[BaseNode]:
        """The nodes of ``node_ids`` (those that exist, in order), optionally only those
        matching ``filters``; or all nodes matching ``filters``."""
        where = to_latentdb_filter(filters)
        if node_ids is None and where is None:
            raise ValueError("get_nodes needs node_ids or filters")
        if node_ids is not None:
            records = [r for r in self._collection.get(list(node_ids)) if r is not None]
            if where is not None:
                allowed = {r.id for r in self._matching(where)}
                records = [r for r in records if r.id in allowed]
            return [self._node(r.id, r.text, r.metadata, r.vector) for r in records]
        return [self._node(r.id, r.text, r.metadata, r.vector) for r in self._matching(where)]

    def _matching(self, where: dict) -> list:
        """Every document matching a filter (an exact filtered search over all)."""
        n = self._collection.count()
        if n == 0:
            return []
        dim = self._collection.dim
        hits = self._collection.search(
            vector=np.ones(dim, dtype=np.float32),
            k=min(max(n, 1), latentdb.MAX_K),
            filter=where,
            exact=True,
            include_vectors=True,
        )
        return hits

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The ``similarity_top_k`` nodes nearest to ``query_embedding`` (or best for
        ``query_str`` on a collection with a model), filtered by ``filters``, ``node_ids`` and
        ``doc_ids``."""
        parts = [p for p in [to_latentdb_filter(query.filters)] if p is not None]
        if query.doc_ids:
            parts.append({"ref_doc_id": {"$in": list(query.doc_ids)}})
        if query.node_ids:
            parts.append({_NODE_ID: {"$in": list(query.node_ids)}})
        where = None if not parts else parts[0] if len(parts) == 1 else {"$and": parts}
        k = query.similarity_top_k
        if k <= 0 or self._collection.count() == 0:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        mode = None
        if query.mode == VectorStoreQueryMode.TEXT_SEARCH:
            mode = "lexical"
        elif query.mode in (VectorStoreQueryMode.HYBRID, VectorStoreQueryMode.SEMANTIC_HYBRID):
            mode = "hybrid"
        if query.query_embedding is not None and mode != "lexical":
            hits = self._collection.search(
                vector=np.asarray(query.query_embedding, dtype=np.float32),
                text=query.query_str if mode == "hybrid" else None,
                k=k,
                filter=where,
                mode=mode,
                include_vectors=True,
            )
        elif query.query_str is not None:
            hits = self._collection.search(
                text=query.query_str, k=k, filter=where, mode=mode, include_vectors=True
            )
        else:
            raise ValueError("the query needs query_embedding or query_str")
        nodes = [self._node(h.id, h.text, h.metadata, h.vector) for h in hits]
        return VectorStoreQueryResult(
            nodes=nodes, similarities=[h.score for h in hits], ids=[h.id for h in hits]
        )

    @staticmethod
    def _node(id: str, text: Optional[str], metadata: dict, vector: Any) -> BaseNode:
        try:
            node = metadata_dict_to_node(metadata, text=text)
        except Exception:
            # Written without LlamaIndex's node JSON: a plain text node.
            node = TextNode(id_=id, text=text or "", metadata=metadata)
        if _NODE_ID in node.metadata:
            node.metadata.pop(_NODE_ID)
        node.id_ = id
        if text is not None:
            node.set_content(text)
        if vector is not None:
            node.embedding = [float(x) for x in vector]
        return node
