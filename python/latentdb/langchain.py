"""A LangChain `VectorStore` over a latentdb collection (needs ``langchain-core``).

Two ways to embed:

- with a LangChain ``Embeddings`` object (``embedding=...``): texts and queries are embedded in
  Python and stored as vectors, as with any vector store;
- with latentdb's built-in model (``embedding=None`` on a collection created with
  ``model="default"``): texts are embedded inside latentdb and queries run as latentdb text
  searches (hybrid dense + BM25 by default; pass ``mode="dense"`` for pure vector search and
  for relevance scores).

    from latentdb.langchain import LatentDBVectorStore
    store = LatentDBVectorStore.from_texts(["foo", "bar"], path="./mydb", collection_name="docs")
    store.similarity_search("foo", k=1)

Filters are latentdb filter dicts (``{"year": {"$gte": 2020}}``; a plain ``{"key": value}``
is equality).
"""

from __future__ import annotations

import uuid
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance

import latentdb

__all__ = ["LatentDBVectorStore"]


class LatentDBVectorStore(VectorStore):
    """A LangChain vector store backed by a `latentdb.Collection`."""

    def __init__(
        self,
        collection: latentdb.Collection,
        embedding: Optional[Embeddings] = None,
        *,
        mode: Optional[str] = None,
    ) -> None:
        """Wraps ``collection``. Without ``embedding`` the collection must have a model
        (created with ``model=...``); ``mode`` is the search mode of text queries then
        (``None``: the collection's default, hybrid)."""
        if embedding is None and collection.model is None:
            raise latentdb.FailedPreconditionError(
                f"collection {collection.name!r} has no model: pass embedding=... or create "
                'it with model="default"'
            )
        self._collection = collection
        self._embedding = embedding
        self._mode = mode

    # ---- construction -----------------------------------------------------------------

    @classmethod
    def from_texts(
        cls,
        texts: List[str],
        embedding: Optional[Embeddings] = None,
        metadatas: Optional[List[dict]] = None,
        *,
        ids: Optional[List[str]] = None,
        db: Optional[latentdb.Database] = None,
        path: Optional[str] = None,
        collection_name: str = "langchain",
        metric: str = "cosine",
        model: Optional[str] = None,
        mode: Optional[str] = None,
        **kwargs: Any,
    ) -> "LatentDBVectorStore":
        """A store over ``collection_name`` of ``db`` (or of the database at ``path``),
        created if missing (with ``model``, ``"default"`` when no ``embedding`` is given, or
        with the embedding's dimension), holding ``texts``."""
        if db is None:
            if path is None:
                raise latentdb.InvalidArgumentError("from_texts needs db=... or path=...")
            db = latentdb.open(path)
        if embedding is None:
            col = db.get_or_create_collection(
                collection_name, metric=metric, model=model or "default"
            )
        else:
            names = set(db.list_collections())
            if collection_name in names:
                col = db.get_collection(collection_name)
            else:
                dim = len(embedding.embed_query("dimension probe"))
                col = db.create_collection(collection_name, dim=dim, metric=metric)
        store = cls(col, embedding, mode=mode)
        store.add_texts(texts, metadatas, ids=ids, **kwargs)
        return store

    @property
    def embeddings(self) -> Optional[Embeddings]:
        """The LangChain embeddings, or ``None`` with latentdb's built-in model."""
        return self._embedding

    @property
    def collection(self) -> latentdb.Collection:
        """The latentdb collection."""
        return self._collection

    # ---- writes ------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: Optional[List[dict]] = None,
        *,
        ids: Optional[List[Optional[str]]] = None,
        **kwargs: Any,
    ) -> List[str]:
        """Adds (or replaces, by id) texts; returns their ids (generated when missing)."""
        texts = list(texts)
        if not texts:
            return []
        if ids is None:
            ids = [None] * len(texts)
        ids = [i if i else str(uuid.uuid4()) for i in ids]
        if len(ids) != len(texts):
            raise latentdb.InvalidArgumentError(
                f"{len(ids)} ids for {len(texts)} texts: give one id per text"
            )
        if metadatas is not None and len(metadatas) != len(texts):
            raise latentdb.InvalidArgumentError(
                f"{len(metadatas)} metadatas for {len(texts)} texts: give one per text"
            )
        metadata = [dict(m) if m else None for m in metadatas] if metadatas else None
        if self._embedding is None:
            return self._collection.upsert(ids, texts=texts, metadata=metadata)
        vectors = np.asarray(self._embedding.embed_documents(texts), dtype=np.float32)
        return self._collection.upsert(ids, vectors=vectors, texts=texts, metadata=metadata)

    def delete(self, ids: Optional[List[str]] = None, **kwargs: Any) -> Optional[bool]:
        """Deletes by ids (missing ids are ignored), or by ``filter=...``; ``True``."""
        where = kwargs.get("filter") or kwargs.get("where")
        if ids is None and where is None:
            raise latentdb.InvalidArgumentError("delete needs ids or filter=...")
        if ids is not None:
            if ids:
                self._collection.delete(list(ids))
        else:
            self._collection.delete(where=where)
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> List[Document]:
        """The documents of ``ids`` that exist, in the order given."""
        return [
            Document(id=r.id, page_content=r.text or "", metadata=r.metadata)
            for r in self._collection.get(list(ids))
            if r is not None
        ]

    # ---- search ------------------------------------------------------------------------

    def _hits(
        self,
        query: Optional[str],
        vector: Optional[Sequence[float]],
        k: int,
        filter: Optional[dict],
        include_vectors: bool = False,
        **kwargs: Any,
    ) -> list:
        if self._collection.count() == 0:
            return []
        extra = {key: kwargs[key] for key in ("ef", "exact", "mode", "explain") if key in kwargs}
        if vector is None and self._embedding is not None:
            vector = self._embedding.embed_query(query or "")
            extra.setdefault("mode", self._mode)
        if vector is not None:
            q = np.asarray(vector, dtype=np.float32)
            # A query text goes along for the lexical leg of mode="hybrid"/"lexical".
            text = query if extra.get("mode") in ("hybrid", "lexical") else None
            return self._collection.search(
                vector=q, text=text, k=k, filter=filter, include_vectors=include_vectors, **extra
            )
        extra.setdefault("mode", self._mode)
        return self._collection.search(
            text=query, k=k, filter=filter, include_vectors=include_vectors, **extra
        )

    @staticmethod
    def _doc(hit: Any) -> Document:
        return Document(id=hit.id, page_content=hit.text or "", metadata=hit.metadata)

    def similarity_search(
        self, query: str, k: int = 4, filter: Optional[dict] = None, **kwargs: Any
    ) -> List[Document]:
        """The ``k`` documents best matching ``query``."""
        return [self._doc(h) for h in self._hits(query, None, k, filter, **kwargs)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: Optional[dict] = None, **kwargs: Any
    ) -> List[Tuple[Document, float]]:
        """Documents with latentdb's score (larger is better: cosine similarity, inner
        product or negated L2 distance; the fused score for hybrid text queries)."""
        return [(self._doc(h), h.score) for h in self._hits(query, None, k, filter, **kwargs)]

    def similarity_search_by_vector(
        self, embedding: List[float], k: int = 4, filter: Optional[dict] = None, **kwargs: Any
    ) -> List[Document]:
        """The ``k`` documents nearest to ``embedding``."""
        return [self._doc(h) for h in self._hits(None, embedding, k, filter, **kwargs)]

    def similarity_search_by_vector_with_score(
        self, embedding: List[float], k: int = 4, filter: Optional[dict] = None, **kwargs: Any
    ) -> List[Tuple[Document, float]]:
        """Documents nearest to ``embedding`` with their scores."""
        return [(self._doc(h), h.score) for h in self._hits(None, embedding, k, filter, **kwargs)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Maps latentdb's dense scores to [0, 1] by metric (text queries on the built-in
        model need ``mode="dense"`` for this to be meaningful)."""
        metric = self._collection.metric
        if metric == "cosine":
            return lambda s: (s + 1.0) / 2.0
        if metric == "l2":
            # The score is the negated distance.
            return lambda s: 1.0 / (1.0 + max(-s, 0.0))
        return lambda s: 1.0 / (1.0 + np.exp(-s))

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: List[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Optional[dict] = None,
        **kwargs: Any,
    ) -> List[Document]:
        """Maximal marginal relevance among the ``fetch_k`` nearest documents."""
        hits = self._hits(None, embedding, fetch_k, filter, include_vectors=True, **kwargs)
        if not hits:
            return []
        chosen = maximal_marginal_relevance(
            np.asarray(embedding, dtype=np.float32),
            [h.vector for h in hits],
            lambda_mult=lambda_mult,
            k=k,
        )
        return [self._doc(hits[i]) for i in chosen]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Optional[dict] = None,
        **kwargs: Any,
    ) -> List[Document]:
        """Maximal marginal relevance for a text query."""
        if self._embedding is None:
            raise NotImplementedError(
                "max_marginal_relevance_search needs a LangChain embeddings object; with the "
                "built-in model use max_marginal_relevance_search_by_vector(db.embed([query])[0])"
            )
        vector = self._embedding.embed_query(query)
        return self.max_marginal_relevance_search_by_vector(
            vector, k, fetch_k, lambda_mult, filter, **kwargs
        )
